package ctl

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/embednats/natstest"
)

// BenchmarkLeftoverBuilds compares what the server reads from disk, and
// holds in memory after, to find the builds app delete names: by listing
// every object (ObjectStore.List, as image list still does, and as app
// delete did) and by the stream's subjects (unpinnedImagesOf), in a
// narun-binaries of 48 objects of 3 MiB, two of them the app's. The
// server restarts before each run so that no block is cached. Both runs
// share this process with the server, so read-B/op also counts the few
// bytes the client reads from its socket.
func BenchmarkLeftoverBuilds(b *testing.B) {
	s := natstest.Start(b)
	nc := natstest.Connect(b, s)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	obs, err := store.Objects(ctx, js, names.BinariesBucket, nil)
	if err != nil {
		b.Fatal(err)
	}
	content := make([]byte, 3<<20)
	for i := range 48 {
		app := "other"
		if i%24 == 0 {
			app = "hello"
		}
		for j := range content {
			content[j] = byte(rand.Uint32())
		}
		name := fmt.Sprintf("%s/1.0.%d/linux-%s-%012d", app, i, runtime.GOARCH, i)
		if _, err := obs.Put(ctx, jetstream.ObjectMeta{Name: name}, bytes.NewReader(content)); err != nil {
			b.Fatal(err)
		}
	}
	e := &env{stdio: cliIO(), log: slog.New(slog.DiscardHandler), timeout: 30 * time.Second}
	e.cfg.Ctl.NATSURL = s.ClientURL()
	if err := e.connect(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.close)

	for _, bc := range []struct {
		name string
		find func() (int, error)
	}{
		{"ObjectStore.List", func() (int, error) {
			objs, err := e.listObjects(ctx, names.BinariesBucket, binaryRefs)
			n := 0
			for _, o := range objs {
				if strings.HasPrefix(o.Name, "hello/") && len(o.UsedBy) == 0 {
					n++
				}
			}
			return n, err
		}},
		{"subjects", func() (int, error) {
			left, _, err := e.unpinnedImagesOf(ctx, "hello")
			return len(left), err
		}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var read, held uint64
			for b.Loop() {
				b.StopTimer()
				if err := s.Restart(); err != nil {
					b.Fatal(err)
				}
				if err := nc.FlushTimeout(10 * time.Second); err != nil {
					b.Fatal(err)
				}
				if err := e.nc.FlushTimeout(10 * time.Second); err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				heap := heapInuse()
				r := readBytes(b)
				b.StartTimer()
				n, err := bc.find()
				b.StopTimer()
				read += readBytes(b) - r
				runtime.GC()
				held += heapInuse() - min(heap, heapInuse())
				if err != nil || n != 2 {
					b.Fatalf("found %d builds of hello: %v", n, err)
				}
				b.StartTimer()
			}
			b.ReportMetric(float64(read)/float64(b.N), "read-B/op")
			b.ReportMetric(float64(held)/float64(b.N), "held-B/op")
		})
	}
}

func heapInuse() uint64 {
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// readBytes is what this process has read so far, from files and sockets
// alike (rchar of /proc/self/io).
func readBytes(b *testing.B) uint64 {
	raw, err := os.ReadFile("/proc/self/io")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(raw)) {
		if v, ok := strings.CutPrefix(line, "rchar: "); ok {
			n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
			if err != nil {
				b.Fatal(err)
			}
			return n
		}
	}
	b.Fatal("no rchar in /proc/self/io")
	return 0
}
