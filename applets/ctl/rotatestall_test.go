package ctl

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
)

// muteLink forwards connections to a NATS server until a client has sent
// pattern the given number of times; from then on the server's messages
// (MSG, HMSG: every answer to a request) are lost, and the rest of the
// protocol passes, as when JetStream stops answering while its server is
// up: a cluster that lost its majority, a hung stream leader. The client
// keeps hearing PONGs, so its connection never looks dead.
type muteLink struct {
	url     string
	pattern []byte
	times   int
	muted   atomic.Bool
}

func newMuteLink(t *testing.T, target, pattern string, times int) *muteLink {
	t.Helper()
	l := &muteLink{pattern: []byte(pattern), times: times}
	l.url = forward(t, target, l.up, l.down)
	return l
}

// up forwards what the client sends, counting pattern in it; one split
// across two reads is counted too.
func (l *muteLink) up(dst, src net.Conn) {
	defer dst.Close()
	var tail []byte
	seen := 0
	buf := make([]byte, 4<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			data := append(tail, buf[:n]...)
			if seen += bytes.Count(data, l.pattern); seen >= l.times {
				l.muted.Store(true)
			}
			// Keep what could start a pattern that ends in the next read,
			// but not a whole one, which is counted already.
			tail = append([]byte(nil), data[max(len(data)-len(l.pattern)+1, 0):]...)
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

// down forwards what the server sends, one protocol line (and payload)
// at a time, leaving out messages once the link is muted.
func (l *muteLink) down(dst, src net.Conn) {
	defer dst.Close()
	r := bufio.NewReader(src)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		frame := line
		// MSG subject sid [reply] size, HMSG subject sid [reply] hsize size:
		// the payload, and its CRLF, follow the line.
		if bytes.HasPrefix(line, []byte("MSG ")) || bytes.HasPrefix(line, []byte("HMSG ")) {
			f := bytes.Fields(line)
			size, err := strconv.Atoi(string(f[len(f)-1]))
			if err != nil {
				return
			}
			payload := make([]byte, size+2)
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			if l.muted.Load() {
				continue
			}
			frame = append(line, payload...)
		}
		if _, err := dst.Write(frame); err != nil {
			return
		}
	}
}

// A JetStream that stops answering in the middle of secret rotate ends it
// within its --timeout per operation, as every other secret command, and
// its error says how far it got: which secret was re-encrypted, which
// one's write went unanswered (stored or not, ctl cannot know) and which
// it did not try. It used to wait for the answer for ever.
func TestSecretRotateEndsWhenNATSStopsAnswering(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key := h.dir + "/secret.key"
	h.ok("", "--key-file", key, "secret", "keygen")
	old, err := secrets.LoadRing(key)
	if err != nil {
		t.Fatal(err)
	}
	kv := h.kv(names.SecretsBucket)
	// Stored in this order, listed in this order: the link goes silent at
	// the write of the second.
	for _, name := range []string{"first", "second", "third"} {
		if err := secrets.Put(context.Background(), kv, old, name, []byte("v-"+name)); err != nil {
			t.Fatal(err)
		}
	}
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	link := newMuteLink(t, h.url, "PUB $KV."+names.SecretsBucket+".", 2)
	h.url = link.url

	r := h.run("", "--timeout", "1s", "--key-file", key, "secret", "rotate")

	if !link.muted.Load() {
		t.Fatalf("the link never went silent: rotate wrote fewer than two secrets: exit %d\nstdout: %s\nstderr: %s", r.code, r.out, r.err)
	}
	if r.code != 1 {
		t.Fatalf("secret rotate with NATS silent: exit %d, want 1\nstdout: %s\nstderr: %s", r.code, r.out, r.err)
	}
	if !strings.Contains(r.out, "re-encrypted first with key") || strings.Contains(r.out, "re-encrypted second") || strings.Contains(r.out, "re-encrypted third") {
		t.Errorf("stdout %q, want first re-encrypted and no other", r.out)
	}
	for _, want := range []string{`"second"`, "may or may not", "not tried, NATS stopped answering: third"} {
		if !strings.Contains(r.err, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.err)
		}
	}
}
