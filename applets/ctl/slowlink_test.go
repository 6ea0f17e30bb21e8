package ctl

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/applets/internal/testutil"
)

// slowLink forwards one client's connection to a NATS server as a link to
// a remote device would: what the client sends reaches the server at no
// more than rate bytes a second (0: at once), what it answers at no more
// than downRate, and once the client has sent
// muteAfter bytes (0: never), what the server answers is lost, as over a
// link that fails one way.
type slowLink struct {
	url       string
	rate      int
	muteAfter int64
	downRate  int
	sent      atomic.Int64
}

func newSlowLink(t *testing.T, target string, rate, downRate int, muteAfter int64) *slowLink {
	t.Helper()
	l := &slowLink{rate: rate, downRate: downRate, muteAfter: muteAfter}
	l.url = forward(t, target, l.up, l.down)
	return l
}

func (l *slowLink) up(dst, src net.Conn) {
	defer dst.Close()
	start := time.Now()
	buf := make([]byte, 4<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			sent := l.sent.Add(int64(n))
			if l.rate > 0 {
				// Paced on the total so far, as a link of that rate
				// delivers it, however the reads came.
				time.Sleep(time.Until(start.Add(time.Duration(sent) * time.Second / time.Duration(l.rate))))
			}
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (l *slowLink) down(dst, src net.Conn) {
	defer dst.Close()
	start, got := time.Now(), 0
	buf := make([]byte, 4<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && l.downRate > 0 {
			got += n
			time.Sleep(time.Until(start.Add(time.Duration(got) * time.Second / time.Duration(l.downRate))))
		}
		if n > 0 && (l.muteAfter == 0 || l.sent.Load() < l.muteAfter) {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// linkEnv is a ctl environment that reaches the harness's server through
// link, with NATS operations bounded by timeout.
func (h *harness) linkEnv(link *slowLink, timeout time.Duration) *env {
	h.t.Helper()
	e := &env{stdio: cliIO(), log: slog.New(slog.DiscardHandler), timeout: timeout}
	e.stdio.Stderr = io.Discard
	e.cfg.Ctl.NATSURL = link.url
	if err := e.connect(); err != nil {
		h.t.Fatal(err)
	}
	h.t.Cleanup(e.close)
	return e
}

// randomBinary writes size random bytes to a file and describes it as
// deploy would a binary for this machine.
func randomBinary(t *testing.T, size int) binaryFile {
	t.Helper()
	b := make([]byte, size)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	return binaryFile{Path: p, Arch: runtime.GOARCH, Size: int64(size), SHA256: hex.EncodeToString(sum[:]), Object: "app-" + hex.EncodeToString(sum[:6])}
}

// An upload over a link slower than the 2 Mbit/s the deadline of the whole
// upload once assumed (a second per 256 KiB, past --timeout) succeeds
// while chunks keep being acknowledged: here 1.25 MiB at 128 KiB/s takes
// at least 10 s, and that deadline was 3 s + 5 s.
func TestUploadOverSlowLink(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.linkEnv(newSlowLink(t, h.url, 128<<10, 0, 0), 3*time.Second)
	ctx := context.Background()
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBinary(t, 1280<<10)
	if err := e.upload(ctx, obs, &b); err != nil {
		t.Fatalf("upload over a slow link that kept moving: %v", err)
	}
	direct, err := h.js.ObjectStore(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	got, err := direct.GetBytes(ctx, b.Object)
	if err != nil {
		t.Fatalf("read the uploaded object back: %v", err)
	}
	if sum := sha256.Sum256(got); hex.EncodeToString(sum[:]) != b.SHA256 {
		t.Fatalf("object read back has sha256 %x, want %s", sum, b.SHA256)
	}
}

// A binary that changed since deploy hashed it fails its upload and
// leaves no object under the name its digest gave: one holding other
// bytes would make every later deploy of the right file refuse to
// replace it.
func TestUploadOfChangedBinaryLeavesNoObject(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	src := "name = \"hello\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	app, err := spec.Parse("hello.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	p := elfBinary(t)
	b, err := inspectBinary(p, app)
	if err != nil {
		t.Fatal(err)
	}
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	orig, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, append(bytes.Clone(orig), 0), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := e.upload(ctx, obs, &b); err == nil {
		t.Fatal("upload of bytes other than those hashed succeeded")
	}
	switch info, err := obs.GetInfo(ctx, b.Object); {
	case err == nil:
		t.Fatalf("failed upload left %s holding sha256 %s, not %s", b.Object, store.DigestHex(info), b.SHA256)
	case !errors.Is(err, jetstream.ErrObjectNotFound):
		t.Fatal(err)
	}
	if err := os.WriteFile(p, orig, 0o755); err != nil {
		t.Fatal(err)
	}
	h.ok("", "deploy", h.file("hello.toml", src), "--binary", p)
}

// An upload whose chunks reach the server but whose acknowledgements are
// lost fails, and leaves no chunks behind: they would belong to no object,
// and no prune would ever find them.
func TestFailedUploadLeavesNoChunks(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	// A few KiB carry the handshake and the lookups before the chunks.
	e := h.linkEnv(newSlowLink(t, h.url, 0, 0, 64<<10), time.Second)
	ctx := context.Background()
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBinary(t, 512<<10)
	if err := e.upload(ctx, obs, &b); err == nil {
		t.Fatal("upload whose acknowledgements were lost succeeded")
	}
	s, err := h.js.Stream(ctx, "OBJ_"+names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the chunks of the failed upload purged", func() bool {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 0
	})
}

// An object stored again under its name leaves only the new content: the
// chunks of the one it replaces are removed, as nats.go's Put removes them.
func TestPutObjectReplacesContent(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	if _, err := e.objects(ctx, names.FilesBucket); err != nil {
		t.Fatal(err)
	}
	for _, content := range []string{strings.Repeat("a", 3*uploadChunk), "b"} {
		if _, err := e.putObject(ctx, names.FilesBucket, jetstream.ObjectMeta{Name: "conf"}, strings.NewReader(content), sha256Hex(content), nil); err != nil {
			t.Fatal(err)
		}
	}
	got, err := e.js.ObjectStore(ctx, names.FilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := got.GetString(ctx, "conf"); err != nil || b != "b" {
		t.Fatalf("object read back: %q, %v; want %q", b, err, "b")
	}
	s, err := h.js.Stream(ctx, "OBJ_"+names.FilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	info, err := s.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Msgs != 2 {
		t.Errorf("stream holds %d messages after the object was replaced, want 2 (one chunk, the metadata)", info.State.Msgs)
	}
}

// Content that is not what was hashed (a file files put or deploy read
// again after it changed) is not stored: the object under that name keeps
// the content it had, and the chunks sent are purged. Stored, it would
// stand under a digest it does not have, and replace the content a spec
// pins.
func TestPutObjectOfChangedContentKeepsEarlierObject(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	if _, err := e.objects(ctx, names.FilesBucket); err != nil {
		t.Fatal(err)
	}
	if _, err := e.putObject(ctx, names.FilesBucket, jetstream.ObjectMeta{Name: "conf"}, strings.NewReader("a"), sha256Hex("a"), nil); err != nil {
		t.Fatal(err)
	}
	changed := strings.Repeat("c", 2*uploadChunk)
	if _, err := e.putObject(ctx, names.FilesBucket, jetstream.ObjectMeta{Name: "conf"}, strings.NewReader(changed), sha256Hex("b"), nil); err == nil {
		t.Fatal("upload of content other than that hashed succeeded")
	}
	obs, err := h.js.ObjectStore(ctx, names.FilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if b, err := obs.GetString(ctx, "conf"); err != nil || b != "a" {
		t.Fatalf("object read back: %q, %v; want %q", b, err, "a")
	}
	s, err := h.js.Stream(ctx, "OBJ_"+names.FilesBucket)
	if err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the chunks of the refused upload purged", func() bool {
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs == 2
	})
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// The read through a deploy makes of a binary already uploaded (to check
// its chunks) succeeds over a link slower than the 2 Mbit/s its deadline
// once assumed, while data keeps coming: 1.25 MiB at 64 KiB/s takes at
// least 20 s, and that deadline was 10 s + 5 s. The server queues the
// whole object ahead of the connection's pings, which drops it once or
// twice on the way (docs/CLUSTER.md, "Slow links"): --timeout must
// outlast a reconnect.
func TestReadThroughOverSlowLink(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	link := newSlowLink(t, h.url, 0, 64<<10, 0)
	e := h.linkEnv(link, 10*time.Second)
	ctx := context.Background()
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBinary(t, 1280<<10)
	direct, err := h.js.ObjectStore(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(b.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := direct.Put(ctx, jetstream.ObjectMeta{Name: b.Object}, f); err != nil {
		t.Fatal(err)
	}
	if err := e.readThrough(ctx, obs, &b); err != nil {
		t.Fatalf("read through over a slow link that kept moving: %v", err)
	}
	// The PONGs wait behind the object: pings alone took the link for
	// dead every 8 s, and a reply lost in a reconnect held Get to its
	// deadline.
	if n := e.nc.Stats().Reconnects; n != 0 {
		t.Errorf("%d reconnects during a read over a link that kept moving", n)
	}
}

// A deploy whose upload takes longer than a few heartbeats judges the
// nodes by their heartbeats after it, not by those read before: over a
// slow link every node looked down ("has sent no heartbeat for 1m54s"
// after a 10 MiB upload at 1 Mbit/s).
func TestDeployJudgesNodesAfterItsUpload(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.heartbeat(state.Node{ID: "n1", Arch: runtime.GOARCH, Interval: 100 * time.Millisecond})
	// The node's runner: a heartbeat each interval, for as long as the
	// deploy runs.
	nodes := h.kv(names.NodesBucket)
	stop := make(chan struct{})
	beating := make(chan struct{})
	go func() {
		defer close(beating)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				b, _ := json.Marshal(state.Node{ID: "n1", OS: "linux", Arch: runtime.GOARCH, Interval: 100 * time.Millisecond, Time: time.Now().UTC()})
				if _, err := nodes.Put(context.Background(), "n1", b); err != nil {
					return
				}
			}
		}
	}()
	// 512 KiB at 128 KiB/s: 4 s, past 3 intervals and a second.
	link := newSlowLink(t, h.url, 128<<10, 0, 0)
	slow := *h
	slow.url = link.url
	elf, err := os.ReadFile(elfBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "app")
	if err := os.WriteFile(bin, append(elf, make([]byte, 512<<10)...), 0o755); err != nil {
		t.Fatal(err)
	}
	r := slow.ok("", "deploy", h.file("hello.toml", "name = \"hello\"\nversion = \"1.0.0\"\nnodes = [\"n1\"]\n"), "--binary", bin)
	close(stop)
	<-beating
	if strings.Contains(r.err, "has sent no heartbeat") {
		t.Errorf("deploy whose node kept sending heartbeats during the upload called it down:\n%s", r.err)
	}
}

// ctl does not reconnect once its connection is closed (it gave up after
// its reconnect attempts): an upload over it fails at once, saying the
// connection was lost, instead of retrying on a connection that no wait
// brings back.
func TestUploadOverClosedConnectionFailsAtOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stderr bytes.Buffer
	e := h.env(&stderr)
	ctx := context.Background()
	if _, err := e.objects(ctx, names.BinariesBucket); err != nil {
		t.Fatal(err)
	}
	// The test's own connection looks the binary up, so that the upload
	// gets past that check to the put, and fails there.
	obs, err := h.js.ObjectStore(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	e.nc.Close()
	b := randomBinary(t, 64<<10)
	err = e.upload(ctx, obs, &b)
	if err == nil || !strings.Contains(err.Error(), "connection to NATS was lost") {
		t.Errorf("upload over a closed connection: %v; want it to say the connection to NATS was lost", err)
	}
	if strings.Contains(stderr.String(), "retrying") {
		t.Errorf("upload retried over a closed connection:\n%s", stderr.String())
	}
}

// A binary read back whose opening JetStream leaves unanswered (a member
// that has just lost its group's leader drops the request) is opened
// again, not left to wait out the read's deadline, sized for a slow link:
// deploy hung 22 minutes reading back a 10 MiB binary after a member of a
// cluster of three was killed.
func TestReadThroughOpensAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	b := randomBinary(t, 64<<10)
	if err := e.upload(ctx, obs, &b); err != nil {
		t.Fatal(err)
	}
	silent := &testutil.UnansweredGet{ObjectStore: obs}
	if err := e.readThrough(ctx, silent, &b); err != nil {
		t.Fatalf("read back after an unanswered opening: %v", err)
	}
	if silent.Gets() != 2 {
		t.Fatalf("opened %d times, want 2", silent.Gets())
	}
}
