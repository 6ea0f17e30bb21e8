package ctl

import (
	"bytes"
	"context"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// purgeBeforePull forwards one client's connections to a NATS server and,
// before the first pull request (a JetStream MSG.NEXT) the client sends
// reaches the server, runs purge: what ctl decided from the lines it saw
// pending is then out of date when it reads them, as when the stream's
// limits drop them in between. It returns the URL to give the client.
func purgeBeforePull(t *testing.T, target string, purge func()) string {
	t.Helper()
	var once sync.Once
	pull := []byte(".API.CONSUMER.MSG.NEXT.")
	return forward(t, target, func(dst, src net.Conn) {
		defer dst.Close()
		var seen []byte
		buf := make([]byte, 32<<10)
		for {
			n, err := src.Read(buf)
			if n > 0 {
				// The tail of what came before: the subject may be split
				// over two reads.
				seen = append(seen[max(0, len(seen)-len(pull)):], buf[:n]...)
				if bytes.Contains(seen, pull) {
					once.Do(purge)
				}
				if _, err := dst.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}, pass)
}

// logs without -f says it printed no line when the lines it saw pending
// are gone by the time it reads them (the stream's max age, bytes or
// messages, or a purge): it decided on the note before reading, and then
// waited for lines that would never come, printing nothing at all.
func TestLogsSaysWhenTheKeptLinesGoBeforeTheyAreRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	proxied := *h
	proxied.url = quietLinesGoBeforePull(t, h)
	r := proxied.run("", "logs", "quiet")
	if r.code != 0 || r.out != "" || r.err != "no kept log lines of quiet\n" {
		t.Errorf("logs quiet, its lines purged before they were read: exit %d (%v), stdout %q, stderr %q; want exit 0, no line and the note that none is kept", r.code, r.e, r.out, r.err)
	}
}

// logs without -f over a link slow enough that a line takes longer than a
// second to come prints it all the same: nats.go ends a fetch asked for
// without waiting after a second with no message, as when none is left,
// and the lines still pending are not to be taken for none.
func TestLogsOverASlowLinkPrintsEveryKeptLine(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	long := strings.Repeat("x", 32<<10)
	for i := range 2 {
		if _, err := h.js.Publish(ctx, names.LogSubject("slow", "vm", "slow-0"), []byte(long+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	// 32 KiB a line at 8 KiB/s: each takes about four seconds.
	slow := *h
	slow.url = newSlowLink(t, h.url, 0, 8<<10, 0).url
	r := slow.run("", "logs", "slow")
	if r.code != 0 || !strings.Contains(r.out, long+"a\n") || !strings.Contains(r.out, long+"b\n") || r.err != "" {
		t.Errorf("logs slow over a slow link: exit %d (%v), %d bytes on stdout, stderr %q; want exit 0, both lines and nothing on stderr", r.code, r.e, len(r.out), r.err)
	}
}

// logs -f, like logs, says it has no kept line when the lines it saw
// pending are gone by the time it reads them: it waited for new ones
// without a word, as if the app were quiet by a filter's fault; then it
// follows as before.
func TestLogsFollowSaysWhenTheKeptLinesGoBeforeTheyAreRead(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	followQuiet(t, h, h.follow(quietLinesGoBeforePull(t, h), "--timeout", "2s", "logs", "-f", "quiet"))
}

// quietLinesGoBeforePull deploys the app quiet, stores three of its lines,
// and returns the URL of a proxy to h's server that purges the logs stream
// before the first pull request through it reaches the server.
func quietLinesGoBeforePull(t *testing.T, h *harness) string {
	t.Helper()
	ctx := context.Background()
	stream, err := store.LogsStream(ctx, h.js, nil)
	if err != nil {
		t.Fatal(err)
	}
	h.ok("", "deploy", h.file("quiet.toml", strings.Replace(helloSpec, `name = "hello"`, `name = "quiet"`, 1)), "--binary", elfBinary(t))
	for i := range 3 {
		if _, err := h.js.Publish(ctx, names.LogSubject("quiet", "vm", "quiet-0"), []byte("line "+string(rune('a'+i)))); err != nil {
			t.Fatal(err)
		}
	}
	return purgeBeforePull(t, h.url, func() {
		if err := stream.Purge(ctx); err != nil {
			t.Errorf("purge %s: %v", names.LogsStream, err)
		}
	})
}
