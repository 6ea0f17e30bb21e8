// Package natstest starts embedded NATS servers for tests: random port,
// temporary store, shut down when the test ends.
package natstest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/internal/testport"
)

// Start runs a JetStream-enabled server on a random loopback port.
func Start(t testing.TB) *embednats.Server {
	t.Helper()
	return StartConfig(t, embednats.Config{})
}

// StartConfig runs a server with cfg; Listen and DataDir default to a random
// loopback port and a temporary directory.
func StartConfig(t testing.TB, cfg embednats.Config) *embednats.Server {
	t.Helper()
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:-1"
	}
	if cfg.DataDir == "" {
		cfg.DataDir = t.TempDir()
	}
	s, err := embednats.Start(cfg)
	if err != nil {
		t.Fatalf("start embedded nats: %v", err)
	}
	t.Cleanup(s.Shutdown)
	return s
}

// StartWithLogin starts a server on a free loopback port that wants the
// login user:password from its clients, and returns its host:port.
func StartWithLogin(t testing.TB, user, password string) string {
	t.Helper()
	s := StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{{User: user, Password: password}}})
	return strings.TrimPrefix(s.ClientURL(), "nats://")
}

// Connect opens an in-process connection closed when the test ends.
func Connect(t testing.TB, s *embednats.Server, opts ...nats.Option) *nats.Conn {
	t.Helper()
	nc, err := s.Connect(opts...)
	if err != nil {
		t.Fatalf("connect to embedded nats: %v", err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// Cluster is a JetStream cluster on loopback. Each member keeps its name,
// addresses and store across a stop and a start, so that a test can take a
// member down and bring the same member back.
type Cluster struct {
	t       testing.TB
	cfgs    []embednats.Config
	servers []*embednats.Server
}

// NewCluster configures n members routed to each other and starts none.
func NewCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{t: t, cfgs: make([]embednats.Config, n), servers: make([]*embednats.Server, n)}
	routes := make([]string, n)
	for i := range n {
		c.cfgs[i] = embednats.Config{
			Listen:     FreeAddr(t),
			DataDir:    t.TempDir(),
			ServerName: fmt.Sprintf("n%d", i+1),
			Cluster:    embednats.Cluster{Name: "narun", Listen: FreeAddr(t)},
		}
		routes[i] = "nats-route://" + c.cfgs[i].Cluster.Listen
	}
	for i := range c.cfgs {
		c.cfgs[i].Cluster.Routes = routes
	}
	return c
}

// StartCluster runs n members.
func StartCluster(t testing.TB, n int) *Cluster {
	t.Helper()
	c := NewCluster(t, n)
	for i := range n {
		c.Start(i)
	}
	return c
}

// WaitPlaceable waits until JetStream can place a stream with a replica on
// every running member. Electing a leader is not enough: a leader just
// elected refuses every stream ("no suitable peers for placement, peer
// offline") until it has heard what each member can hold.
func (c *Cluster) WaitPlaceable(timeout time.Duration) {
	c.t.Helper()
	var member *embednats.Server
	replicas := 0
	for _, s := range c.servers {
		if s != nil {
			member = s
			replicas++
		}
	}
	if member == nil {
		c.t.Fatal("no member is running")
	}
	js, err := jetstream.New(Connect(c.t, member))
	if err != nil {
		c.t.Fatal(err)
	}
	const probe = "natstest_probe"
	deadline := time.Now().Add(timeout)
	for {
		// Each try has its own bound: without a leader the request gets
		// no answer at all.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err = js.CreateStream(ctx, jetstream.StreamConfig{Name: probe, Replicas: replicas})
		cancel()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			c.t.Fatalf("JetStream placing %d replicas within %s: %v", replicas, timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := js.DeleteStream(ctx, probe); err != nil {
		c.t.Fatalf("delete the probe stream: %v", err)
	}
}

// Start runs member i, which must not be running.
func (c *Cluster) Start(i int) *embednats.Server {
	c.t.Helper()
	if c.servers[i] != nil {
		c.t.Fatalf("member %d is already running", i)
	}
	c.servers[i] = StartConfig(c.t, c.cfgs[i])
	return c.servers[i]
}

// Stop shuts member i down, as a crash would for its peers: it does not hand
// over the leaderships it holds first.
func (c *Cluster) Stop(i int) {
	c.servers[i].Shutdown()
	c.servers[i] = nil
}

// Config is member i's configuration, as Start runs it.
func (c *Cluster) Config(i int) embednats.Config { return c.cfgs[i] }

// Server is member i, nil while it is stopped.
func (c *Cluster) Server(i int) *embednats.Server { return c.servers[i] }

// URL lists every member's client address, as a client configured with the
// whole cluster has them.
func (c *Cluster) URL() string {
	urls := make([]string, len(c.cfgs))
	for i, cfg := range c.cfgs {
		urls[i] = "nats://" + cfg.Listen
	}
	return strings.Join(urls, ",")
}

// Leader is the running member that leads JetStream, or -1 while none does.
func (c *Cluster) Leader() int {
	for i, s := range c.servers {
		if s != nil && s.NATS().JetStreamIsLeader() {
			return i
		}
	}
	return -1
}

// LeaderSeesDown reports whether the JetStream leader counts member i as
// offline: until it does, it may still place a new stream's replicas, or
// its leader, on that member.
func (c *Cluster) LeaderSeesDown(i int) bool {
	l := c.Leader()
	if l < 0 {
		return false
	}
	info, err := c.servers[l].NATS().Jsz(nil)
	if err != nil || info.Meta == nil {
		return false
	}
	for _, p := range info.Meta.Replicas {
		if p.Name == c.cfgs[i].ServerName {
			return p.Offline
		}
	}
	return false
}

// StartWithoutJetStream starts a bare NATS server, without JetStream, as
// narun may be pointed at, and returns a connection to it; both end with
// the test.
func StartWithoutJetStream(t testing.TB) *nats.Conn {
	t.Helper()
	ns, err := server.NewServer(&server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, NoLog: true})
	if err != nil {
		t.Fatal(err)
	}
	go ns.Start()
	if !ns.ReadyForConnections(10 * time.Second) {
		t.Fatal("nats server not ready")
	}
	t.Cleanup(ns.Shutdown)
	nc, err := nats.Connect(ns.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// FreeAddr returns a loopback address whose port is free now, for a
// server a test must name before it starts (a cluster's routes), out of
// the way of the ports the kernel picks for other sockets
// (testport.FreeAddr).
func FreeAddr(t testing.TB) string {
	t.Helper()
	return testport.FreeAddr(t)
}

// PublishRefused publishes to subject on nc and returns the server's
// permissions violation for it, or nil when the server took the message.
func PublishRefused(t testing.TB, nc *nats.Conn, subject string) error {
	t.Helper()
	if err := nc.Publish(subject, []byte("{}")); err != nil {
		t.Fatal(err)
	}
	// The server answers a refused publish with -ERR before the PONG
	// that ends the flush, so the error is in place when Flush returns.
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := nc.LastError(); err != nil && errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), `"`+subject+`"`) {
		return err
	}
	return nil
}

// SmallDisk mounts a tmpfs of size (as mount takes it: "8m") on a new
// temporary directory, for tests of a full disk, and unmounts it when the
// test ends. It skips the test where mounting is not allowed.
func SmallDisk(t testing.TB, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root to mount a small tmpfs")
	}
	dir := t.TempDir()
	if err := syscall.Mount("tmpfs", dir, "tmpfs", 0, "size="+size); err != nil {
		t.Skipf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		// A server shut down just before may still be closing its store's
		// files, which keeps the file system busy for a moment.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := syscall.Unmount(dir, 0)
			if err == nil {
				return
			}
			if errors.Is(err, syscall.EBUSY) && time.Now().After(deadline) {
				// nats-server never closes the first block file of a
				// stream whose store it failed to make for want of
				// space: detached, the file system goes once this
				// process ends.
				if err := syscall.Unmount(dir, syscall.MNT_DETACH); err != nil {
					t.Errorf("detach %s: %v", dir, err)
				}
				t.Logf("%s detached: a file on it is still open", dir)
				return
			}
			if !errors.Is(err, syscall.EBUSY) {
				t.Errorf("unmount %s: %v", dir, err)
				return
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
	return dir
}

// FillDisk fills the file system of dir (a SmallDisk) with one file and
// returns a function that removes it, giving the space back.
func FillDisk(t testing.TB, dir string) (free func()) {
	t.Helper()
	filler := filepath.Join(dir, "filler")
	f, err := os.Create(filler)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := io.Copy(f, zeros{}); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fill the disk: %v", err)
	}
	return func() {
		t.Helper()
		if err := os.Remove(filler); err != nil {
			t.Fatal(err)
		}
	}
}

// zeros reads as an endless run of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// HoldStoreRead makes a JetStream store in dir, with one bucket, whose
// reading by the next server started on dir is held: a FIFO stands in
// for the stream's metadata file, as a big store on a slow card would
// hold it. reading returns once that server has started to read the
// store; release gives it the file and lets the read finish.
func HoldStoreRead(t testing.TB, dir string) (reading, release func()) {
	t.Helper()
	s, err := embednats.Start(embednats.Config{DataDir: dir})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	js, _ := jetstream.New(Connect(t, s))
	if _, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "slow"}); err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	meta := filepath.Join(dir, "jetstream", "jetstream", "$G", "streams", "KV_slow", "meta.inf")
	content, err := os.ReadFile(meta)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(meta); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(meta, 0o600); err != nil {
		t.Fatal(err)
	}
	var f *os.File
	reading = func() {
		t.Helper()
		// Opening a FIFO to write returns once a reader opened it.
		if f, err = os.OpenFile(meta, os.O_WRONLY, 0); err != nil {
			t.Fatal(err)
		}
	}
	release = func() {
		t.Helper()
		if _, err := f.Write(content); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	return reading, release
}
