package ctl

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// app events shows a deploy and a deletion as the node makes them, one
// line per change, and as JSON lines for a script; said before the app
// exists, it warns that the name is not deployed (a typo) and waits.
func TestAppEventsFollowsTheNode(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds the hello app and runs real processes")
	}
	h := newHarness(t)
	hello := startRealRunner(t, h)
	text := h.follow(h.url, "app", "events", "hello")
	asJSON := h.follow(h.url, "app", "events", "hello", "--node", "node-1", "--json")
	const waiting = "warning: app \"hello\" is not deployed; waiting for its events\n"
	for _, f := range []*following{text, asJSON} {
		testutil.Eventually(t, 20*time.Second, "app events saying hello is not deployed", func() bool { return f.errs.String() == waiting })
	}

	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", hello, "--wait", "--timeout", "30s")
	healthy := regexp.MustCompile(`(?m)^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3} node-1/\S+ healthy pid \d+ version 1\.0\.0$`)
	testutil.Eventually(t, 20*time.Second, "app events showing two healthy instances", func() bool {
		return len(healthy.FindAllString(text.out.String(), -1)) == 2
	})
	h.ok("", "app", "delete", "hello", "--wait", "--timeout", "30s")
	stopped := regexp.MustCompile(`(?m)^\S+ node-1/\S+ stopped`)
	testutil.Eventually(t, 20*time.Second, "app events showing both instances stopped", func() bool {
		return len(stopped.FindAllString(text.out.String(), -1)) == 2
	})

	events := func() []state.Event {
		var all []state.Event
		for line := range strings.Lines(asJSON.out.String()) {
			var ev state.Event
			if err := json.Unmarshal([]byte(line), &ev); err != nil {
				t.Fatalf("app events --json printed %q: %v", line, err)
			}
			all = append(all, ev)
		}
		return all
	}
	testutil.Eventually(t, 20*time.Second, "app events --json showing both instances stopped", func() bool {
		n := 0
		for _, ev := range events() {
			if ev.App == "hello" && ev.Node == "node-1" && ev.State == state.Stopped && !ev.Time.IsZero() {
				n++
			}
		}
		return n == 2
	})
	for _, f := range []*following{text, asJSON} {
		f.stop(t)
		if f.errs.String() != waiting {
			t.Errorf("app events stderr: %q, want only %q", f.errs.String(), waiting)
		}
	}

	// Afterwards, what happened is kept: the same lines, each once.
	kept := h.follow(h.url, "app", "events", "hello", "--since", "1h")
	testutil.Eventually(t, 20*time.Second, "app events --since showing both instances stopped", func() bool {
		return len(stopped.FindAllString(kept.out.String(), -1)) == 2
	})
	kept.stop(t)
	if kept.out.String() != text.out.String() {
		t.Errorf("app events --since 1h printed\n%s\nwhile following printed\n%s", kept.out.String(), text.out.String())
	}
	if want := "warning: app \"hello\" is not deployed; printing the events kept of it and waiting for more\n"; kept.errs.String() != want {
		t.Errorf("app events --since stderr: %q, want %q", kept.errs.String(), want)
	}
}

// Any NATS client can publish on an app's event subject: what is not an
// event is skipped with a warning, and an event's fields never act on the
// terminal.
func TestAppEventsOfOtherClients(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	f := h.follow(h.url, "app", "events", "web")
	testutil.Eventually(t, 20*time.Second, "app events waiting", func() bool { return strings.Contains(f.errs.String(), "waiting for its events") })
	nc := h.js.Conn()
	subject := names.EventSubject("web", "vm")
	if err := nc.Publish(subject, []byte("not json")); err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(state.Event{Instance: state.Instance{App: "web", Node: "vm", ID: "web-0", State: state.Crashed, Reason: "\x1b[2Jgone"}, Time: time.Now()})
	if err != nil {
		t.Fatal(err)
	}
	if err := nc.Publish(subject, b); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the event printed", func() bool { return strings.Contains(f.out.String(), " vm/web-0 crashed ") })
	f.stop(t)
	if want := ` vm/web-0 crashed (\x1b[2Jgone)` + "\n"; !strings.HasSuffix(f.out.String(), want) {
		t.Errorf("app events printed %q, want a line ending %q", f.out.String(), want)
	}
	if want := `warning: skipped a message on narun.events.web.vm that is not an instance event: "not json"`; !strings.Contains(f.errs.String(), want) {
		t.Errorf("app events stderr %q, want %q", f.errs.String(), want)
	}
}

func TestAppEventsUsage(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"app", "events"}, "missing NAME"},
		{[]string{"app", "events", "a", "b"}, "want exactly one app name, got 2 arguments"},
		{[]string{"app", "events", "Bad Name"}, `"Bad Name"`},
		{[]string{"app", "events", "web", "--node", "a b"}, `node "a b"`},
		{[]string{"app", "events", "web", "--since", "0s"}, "--since 0s: want how far back"},
		{[]string{"app", "events", "web", "--since", "-1h"}, "--since -1h0m0s: want how far back"},
	} {
		if r := h.fails(2, "", c.args...); !strings.Contains(r.err, c.want) {
			t.Errorf("ctl %q: stderr %q, want %q", c.args, r.err, c.want)
		}
	}
}

// ctl version prints what narun version does, without reading the
// configuration: it answers where narun.toml is broken.
func TestCtlVersion(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.config = h.file("narun.toml", "[ctl\n")
	r := h.ok("", "version")
	if !regexp.MustCompile(`^narun \S+ \(commit \S+\) go\S+ linux/\w+\n$`).MatchString(r.out) {
		t.Errorf("ctl version printed %q", r.out)
	}
	var info map[string]string
	if err := json.Unmarshal([]byte(h.ok("", "version", "--json").out), &info); err != nil || info["go_version"] == "" {
		t.Errorf("ctl version --json: %v %v", info, err)
	}
	h.fails(2, "", "version", "now")
}
