package embednats

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode"

	"github.com/narun/narun/embednats/internal/testport"
	"github.com/nats-io/nats.go"
)

// syncBuffer is a log destination the server's goroutines may share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Lines of one shape beyond the burst are counted, not logged, and the
// count comes with the last of them when the window ends; other shapes,
// and debug lines, are not affected.
func TestRepeatedLinesAreCounted(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	l := &logAdapter{log: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	for i := range 20 {
		l.Errorf("127.0.0.1:%d - rid:%d - authentication error", 40000+i, i)
		l.Debugf("debug %d", i)
	}
	l.Noticef("Server is ready")
	logged := strings.Count(out.String(), "authentication error")
	if logged != repeatBurst {
		t.Fatalf("%d lines of one shape logged, want %d:\n%s", logged, repeatBurst, out.String())
	}
	if n := strings.Count(out.String(), "msg=\"debug "); n != 20 {
		t.Errorf("%d debug lines logged, want all 20", n)
	}
	if !strings.Contains(out.String(), "Server is ready") {
		t.Error("a line of another shape was held back")
	}
	l.close()
	want := fmt.Sprintf(`level=ERROR msg="NATS server lines like this one not logged" count=%d within=1m0s last="127.0.0.1:40019 - rid:19 - authentication error"`, 20-repeatBurst)
	if !strings.Contains(out.String(), want) {
		t.Fatalf("no summary %s in:\n%s", want, out.String())
	}
	l.Errorf("127.0.0.1:1 - rid:1 - authentication error")
	if n := strings.Count(out.String(), "authentication error"); n != logged+2 {
		t.Errorf("after close: %d lines, want every line logged", n)
	}
}

// A member with a wrong route password retries for as long as it runs;
// the member it knocks on logs a few of its failures, then counts them.
func TestWrongRoutePasswordDoesNotFloodTheLog(t *testing.T) {
	t.Parallel()
	var outA syncBuffer
	addrA, addrB := testport.FreeAddr(t), testport.FreeAddr(t)
	cfg := func(name, listen, route, password string, out *syncBuffer) Config {
		c := Config{
			Listen: testport.FreeAddr(t), DataDir: t.TempDir(), ServerName: name,
			Cluster: Cluster{Name: "narun", Listen: listen, Routes: []string{"nats-route://" + route}, User: "route", Password: password},
		}
		if out != nil {
			c.Logger = slog.New(slog.NewTextHandler(out, nil))
		}
		return c
	}
	a, err := Start(cfg("a", addrA, addrB, "right", &outA))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	b, err := Start(cfg("b", addrB, addrA, "wrong", nil))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Shutdown()

	const shape = `#.#.#.#:# - rid:# - authentication error - User "route"`
	counted := func() int {
		a.logs.mu.Lock()
		defer a.logs.mu.Unlock()
		if c := a.logs.shapes[shapeKey{slog.LevelError, shape}]; c != nil {
			return c.lines
		}
		return 0
	}
	deadline := time.Now().Add(30 * time.Second)
	for counted() < repeatBurst+2 {
		if time.Now().After(deadline) {
			t.Fatalf("after 30s, %d failed route logins counted; the log:\n%s", counted(), outA.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	b.Shutdown()
	if n := strings.Count(outA.String(), "authentication error"); n != repeatBurst {
		t.Fatalf("%d failed route logins logged, want %d:\n%s", n, repeatBurst, outA.String())
	}
	n := counted()
	a.Shutdown()
	if want := fmt.Sprintf("count=%d ", n-repeatBurst); !strings.Contains(outA.String(), want) {
		t.Fatalf("no summary with %s after shutdown:\n%s", want, outA.String())
	}
}

// Two members with one server_name (a narun.toml copied with it) refuse
// each other's routes, and each then logs a parse error, about one a
// second, for every subscription a route carries, each naming its own
// subject: limited as one shape, they no longer bury nats-server's line
// saying which name is duplicated.
func TestDuplicateServerNameDoesNotFloodTheLog(t *testing.T) {
	t.Parallel()
	var outA syncBuffer
	addrs := []string{testport.FreeAddr(t), testport.FreeAddr(t), testport.FreeAddr(t)}
	var routes []string
	for _, a := range addrs {
		routes = append(routes, "nats-route://"+a)
	}
	var a *Server
	for i, name := range []string{"dup", "other", "dup"} {
		c := Config{Listen: testport.FreeAddr(t), DataDir: t.TempDir(), ServerName: name, Cluster: Cluster{Name: "narun", Listen: addrs[i], Routes: routes}}
		if i == 0 {
			c.Logger = slog.New(slog.NewTextHandler(&outA, nil))
		}
		s, err := Start(c)
		if err != nil {
			t.Fatal(err)
		}
		defer s.Shutdown()
		if i == 0 {
			a = s
		}
	}
	parseErrors := func() int {
		a.logs.mu.Lock()
		defer a.logs.mu.Unlock()
		n := 0
		for k, c := range a.logs.shapes {
			if strings.Contains(k.shape, "Parse Error") {
				n += c.lines
			}
		}
		return n
	}
	// Within one window, which began with the server's first line.
	deadline := time.Now().Add(repeatWindow * 3 / 4)
	for parseErrors() < 2*repeatBurst {
		if time.Now().After(deadline) {
			t.Fatalf("%d parse errors seen; the log:\n%s", parseErrors(), outA.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	logged := map[string]int{}
	for line := range strings.Lines(outA.String()) {
		if before, _, ok := strings.Cut(line, " Parse Error: "); ok {
			logged[before[strings.LastIndex(before, " ")+1:]]++
		}
	}
	for op, n := range logged {
		if n > repeatBurst {
			t.Errorf("%d lines of %s Parse Error logged, want at most %d:\n%s", n, op, repeatBurst, outA.String())
		}
	}
}

// What the server says about one client connection (a port scan, a
// client speaking another protocol, one publishing past max_payload) is
// that client's fault, not the server's: it goes at WARN, where a port
// open to the network does not fill the journal with errors.
func TestClientConnectionErrorsAreWarnings(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	s, err := Start(Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(), Logger: slog.New(slog.NewTextHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Shutdown()
	conn, err := net.Dial("tcp", strings.TrimPrefix(s.ClientURL(), "nats://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte("GARBAGE\r\n")); err != nil {
		t.Fatal(err)
	}
	var line string
	deadline := time.Now().Add(10 * time.Second)
	for line == "" {
		if time.Now().After(deadline) {
			t.Fatalf("no parser error logged within 10s:\n%s", out.String())
		}
		time.Sleep(20 * time.Millisecond)
		for l := range strings.Lines(out.String()) {
			if strings.Contains(l, "Client parser ERROR") {
				line = l
			}
		}
	}
	if !strings.Contains(line, "level=WARN") || !strings.Contains(line, " - cid:") {
		t.Errorf("a client's parser error logged as %q, want it at WARN with its connection", line)
	}
}

// Only a client from the network is lowered: the cluster's links and
// narun's own in-process connections keep their errors at ERROR.
func TestAboutRemoteClient(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		msg  string
		want bool
	}{
		{"127.0.0.1:51554 - cid:36 - maximum payload exceeded: 5000000 vs 1048576", true},
		{`[::1]:51554 - cid:7 - "v1.2:go" - authentication error`, true},
		{"10.0.0.1/127.0.0.1:8080 - wid:3 - Client parser ERROR", true},
		{"127.0.0.1:1 - mid_ws:3 - Client parser ERROR", true},
		{`127.0.0.1:6222 - rid:4 - authentication error - User "route"`, false},
		{"127.0.0.1:7422 - lid:5 - Leafnode Error 'Authorization Violation'", false},
		{"127.0.0.1:7222 - gid:6 - Gateway Error", false},
		{"pipe - cid:2 - maximum payload exceeded: 5000000 vs 1048576", false},
		{"Error listening on port: 4222 - cid:1", false},
		{"JetStream failed to store a msg - cid:x", false},
	} {
		if got := aboutRemoteClient(tc.msg); got != tc.want {
			t.Errorf("aboutRemoteClient(%q) = %v, want %v", tc.msg, got, tc.want)
		}
	}
}

// The server's start banner draws JetStream's name in ASCII art and
// frames its settings with rules and blank lines: one log record per
// line of the drawing, which in JSON mode says nothing to a reader and
// breaks the JSON lines up for a person. Lines without a letter or digit
// are dropped; the settings stay.
func TestStartBannerDrawsNothing(t *testing.T) {
	t.Parallel()
	var out syncBuffer
	s, err := Start(Config{Listen: testport.FreeAddr(t), DataDir: t.TempDir(), Logger: slog.New(slog.NewJSONHandler(&out, nil))})
	if err != nil {
		t.Fatal(err)
	}
	s.Shutdown()
	var msgs []string
	for _, line := range strings.Split(strings.TrimSpace(out.String()), "\n") {
		var rec struct{ Msg string }
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("not a JSON line: %q", line)
		}
		msgs = append(msgs, rec.Msg)
		if !strings.ContainsFunc(rec.Msg, func(r rune) bool { return unicode.IsLetter(r) || unicode.IsDigit(r) }) {
			t.Errorf("a line of drawing logged: %q", rec.Msg)
		}
	}
	for _, want := range []string{"Starting JetStream", "Server is ready"} {
		if !slices.ContainsFunc(msgs, func(m string) bool { return strings.Contains(m, want) }) {
			t.Errorf("no %q among the lines logged:\n%s", want, out.String())
		}
	}
}

// A logger that takes debug records turns on the server's own debug
// lines, which say what happened to each connection; at info they stay
// off, and the server does not format them for nothing.
func TestDebugLevelTurnsOnServerDebug(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		level slog.Level
		want  bool
	}{
		{slog.LevelDebug, true},
		{slog.LevelInfo, false},
	} {
		t.Run(tc.level.String(), func(t *testing.T) {
			t.Parallel()
			var out syncBuffer
			s, err := Start(Config{Listen: testport.FreeAddr(t), DataDir: t.TempDir(),
				Logger: slog.New(slog.NewTextHandler(&out, &slog.HandlerOptions{Level: tc.level}))})
			if err != nil {
				t.Fatal(err)
			}
			nc, err := nats.Connect(s.ClientURL())
			if err != nil {
				s.Shutdown()
				t.Fatal(err)
			}
			// The server logs the connection's creation before it
			// sends INFO, which Connect waits for: once the server has
			// shut down, the line is there or never will be.
			nc.Close()
			s.Shutdown()
			if got := strings.Contains(out.String(), "Client connection created"); got != tc.want {
				t.Errorf("at %s, the server's debug line about a client logged: %v, want %v; the log:\n%s", tc.level, got, tc.want, out.String())
			}
		})
	}
}
