package gateway

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"runtime/debug"
	rtmetrics "runtime/metrics"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/memfree"
)

// heapKept is the heap memory the process keeps from the OS: its objects,
// live or not yet collected, and the free pages not handed back.
func heapKept() uint64 {
	s := []rtmetrics.Sample{
		{Name: "/memory/classes/heap/objects:bytes"},
		{Name: "/memory/classes/heap/free:bytes"},
		{Name: "/memory/classes/heap/unused:bytes"},
	}
	rtmetrics.Read(s)
	return s[0].Value.Uint64() + s[1].Value.Uint64() + s[2].Value.Uint64()
}

// maxKept raises peak to heapKept's figure.
func maxKept(peak *atomic.Uint64) {
	for k, p := heapKept(), peak.Load(); k > p && !peak.CompareAndSwap(p, k); p = peak.Load() {
	}
}

// Once uploads, or downloads to clients that do not read, are over and the
// gateway stays idle, it hands the memory of their bodies back to the OS:
// nothing else would for minutes, since an idle process collects only
// every two minutes, the body pools survive a collection in their victim
// caches, and Go keeps free pages up to the heap goal of the load's last
// collection. Not parallel: the figures are the whole process's.
func TestIdleGatewayReturnsBodyMemory(t *testing.T) {
	const clients = 32
	for _, tt := range []struct {
		name string
		// exchange runs one client's exchange through e; all counts
		// down the clients whose exchange has begun, and full waits
		// until the bodies have filled the heap.
		exchange func(e *env, all *sync.WaitGroup, full func() error) error
	}{
		{"uploads", func(e *env, all *sync.WaitGroup, _ func() error) error {
			all.Done()
			body := bytes.Repeat([]byte("b"), 1<<20)
			for range 4 {
				resp, err := http.Post(e.hs.URL+"/up", "application/octet-stream", bytes.NewReader(body))
				if err != nil {
					return err
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK || string(got) != "1048576" {
					return fmt.Errorf("upload: %s %q", resp.Status, got)
				}
			}
			return nil
		}},
		{"downloads cut short", func(e *env, all *sync.WaitGroup, full func() error) error {
			resp, err := http.Get(e.hs.URL + "/down")
			if err != nil {
				all.Done()
				return err
			}
			defer resp.Body.Close()
			// Each client reads the start, then stops: the frames the
			// service sends meanwhile wait in the gateway until their
			// client goes, as slow readers do when body_idle_timeout or
			// their own patience ends them.
			if _, err := io.CopyN(io.Discard, resp.Body, 512<<10); err != nil {
				all.Done()
				return fmt.Errorf("download: %s: %w", resp.Status, err)
			}
			all.Done()
			all.Wait()
			return full()
		}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			cfg := gwConfig(config.Route{Path: "/", Service: "svc", Timeout: config.Duration(time.Minute)})
			cfg.MaxBodyMemory = 16 << 20
			e := newEnv(t, cfg)
			e.gw.mem.quiet = memfree.NewDebounce(100*time.Millisecond, e.gw.mem.release)
			// peak is sampled while bodies are in flight: once they are
			// over, the release may come before the test looks.
			var peak atomic.Uint64
			chunk := bytes.Repeat([]byte("d"), 64<<10)
			e.serve(t, "svc", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/down" {
					w.Header().Set("Content-Length", strconv.Itoa(8<<20))
					for range 128 {
						if _, err := w.Write(chunk); err != nil {
							return
						}
					}
					return
				}
				n, err := io.Copy(io.Discard, r.Body)
				if err != nil {
					http.Error(w, err.Error(), http.StatusBadRequest)
					return
				}
				maxKept(&peak)
				fmt.Fprint(w, n)
			}))
			// From what the process needs, not what an earlier test left.
			http.DefaultClient.CloseIdleConnections()
			runtime.GC()
			debug.FreeOSMemory()
			before := heapKept()
			const slack = 8 << 20
			full := func() error {
				for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
					if maxKept(&peak); peak.Load() >= before+2*slack {
						return nil
					}
				}
				return errors.New("the responses never filled the heap")
			}

			var wg, all sync.WaitGroup
			all.Add(clients)
			errs := make(chan error, clients)
			for range clients {
				wg.Go(func() {
					if err := tt.exchange(e, &all, full); err != nil {
						errs <- err
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			http.DefaultClient.CloseIdleConnections()
			t.Logf("heap kept: %d MiB before, %d MiB at most while the bodies travelled", before>>20, peak.Load()>>20)

			if peak.Load() < before+2*slack {
				t.Fatalf("the bodies took %d MiB at most, too little to tell a release from none", (int64(peak.Load())-int64(before))>>20)
			}
			// Well within the two minutes after which Go collects by itself.
			for deadline := time.Now().Add(30 * time.Second); heapKept() >= before+slack; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatalf("after 30 s the heap keeps %d MiB; the gateway holds %d bytes of bodies, %d moved since the last release, %d requests in flight",
						heapKept()>>20, e.gw.mem.held.Load(), e.gw.mem.moved.Load(), e.gw.metrics.inflight.Load())
				}
			}
			t.Logf("heap kept after the release: %d MiB", heapKept()>>20)
		})
	}
}
