package gateway

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/embednats"
)

// wireClient speaks the NATS client protocol over TCP with no library in
// between: nats.go trims header values and always asks for headers, so
// only raw bytes show what a responder in another language may send.
type wireClient struct {
	c  net.Conn
	br *bufio.Reader
}

// wireMsg is one MSG or HMSG from the server: header is the header block
// as sent ("" for MSG).
type wireMsg struct {
	op, subject, reply, header, payload string
}

// dialWire connects to srv over TCP, sends connect (a whole CONNECT line)
// and subscribes to subject; it returns once the server has processed the
// subscription, which its PONG says.
func dialWire(t *testing.T, srv *embednats.Server, connect, subject string) *wireClient {
	t.Helper()
	c, err := net.Dial("tcp", strings.TrimPrefix(srv.ClientURL(), "nats://"))
	if err != nil {
		t.Fatalf("dial nats: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	w := &wireClient{c: c, br: bufio.NewReader(c)}
	if line, err := w.br.ReadString('\n'); err != nil || !strings.HasPrefix(line, "INFO ") {
		t.Fatalf("first line from nats %q, %v: want INFO", line, err)
	}
	w.send(t, connect+"SUB "+subject+" 1\r\nPING\r\n")
	for {
		line, err := w.br.ReadString('\n')
		if err != nil {
			t.Fatalf("wait for PONG: %v", err)
		}
		if line == "PONG\r\n" {
			return w
		}
	}
}

func (w *wireClient) send(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(w.c, s); err != nil {
		t.Errorf("write to nats: %v", err)
	}
}

// next returns the next message, answering the server's PINGs on the way;
// an error is a closed connection or an -ERR line.
func (w *wireClient) next() (wireMsg, error) {
	for {
		line, err := w.br.ReadString('\n')
		if err != nil {
			return wireMsg{}, fmt.Errorf("read from nats: %w", err)
		}
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
			continue
		case f[0] == "PING":
			if _, err := io.WriteString(w.c, "PONG\r\n"); err != nil {
				return wireMsg{}, fmt.Errorf("answer PING: %w", err)
			}
			continue
		case f[0] == "-ERR":
			return wireMsg{}, fmt.Errorf("nats: %s", strings.TrimSpace(line))
		case f[0] != "MSG" && f[0] != "HMSG":
			continue
		}
		// MSG <subject> <sid> [reply] <size>
		// HMSG <subject> <sid> [reply] <header size> <size>
		m := wireMsg{op: f[0], subject: f[1]}
		sizes := 1
		if m.op == "HMSG" {
			sizes = 2
		}
		if len(f) == 3+sizes+1 {
			m.reply = f[3]
		}
		total, err := strconv.Atoi(f[len(f)-1])
		if err != nil {
			return wireMsg{}, fmt.Errorf("size in %q: %w", line, err)
		}
		hlen := 0
		if sizes == 2 {
			if hlen, err = strconv.Atoi(f[len(f)-2]); err != nil {
				return wireMsg{}, fmt.Errorf("header size in %q: %w", line, err)
			}
		}
		buf := make([]byte, total+2)
		if _, err := io.ReadFull(w.br, buf); err != nil {
			return wireMsg{}, fmt.Errorf("read payload: %w", err)
		}
		m.header, m.payload = string(buf[:hlen]), string(buf[hlen:total])
		return m, nil
	}
}

// headerValue returns the value of the first line name: in a header block,
// as the server relayed it.
func headerValue(block, name string) string {
	for line := range strings.SplitSeq(block, "\r\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, name) {
			return strings.TrimLeft(v, " \t")
		}
	}
	return ""
}

// hpubWire is an HPUB of payload with the header lines to "subject" or
// "subject reply".
func hpubWire(to, payload string, lines ...string) string {
	hdr := "NATS/1.0\r\n"
	for _, l := range lines {
		hdr += l + "\r\n"
	}
	hdr += "\r\n"
	return fmt.Sprintf("HPUB %s %d %d\r\n%s%s\r\n", to, len(hdr), len(hdr)+len(payload), hdr, payload)
}

const wireConnect = `CONNECT {"verbose":false,"pedantic":false,"headers":true,"no_responders":true,"protocol":1}` + "\r\n"

// TestReplyValuesTrimmed has a responder that writes the protocol itself
// leave spaces or a tab after a protocol header's value, which HTTP
// drops (RFC 9110 5.5) and nats.go's reader keeps: the value must mean
// what it means without them, not break the reply.
func TestReplyValuesTrimmed(t *testing.T) {
	t.Parallel()
	// A frame the gateway does not read waits out the route's timeout:
	// short, so that a failure here does not take 30 s.
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "trailing", Timeout: config.Duration(5 * time.Second)}))
	replies := map[string]func(reply string) string{
		"/status": func(r string) string { return hpubWire(r, "made", "Narun-Status: 201 ") },
		"/tab":    func(r string) string { return hpubWire(r, "made", "Narun-Status: 201\t") },
		"/twice": func(r string) string {
			return hpubWire(r, "made", "Narun-Status: 201", "narun-status: 201  ")
		},
		"/stream": func(r string) string {
			return hpubWire(r, "ma", "Narun-Body: stream ", "Narun-Status: 201") + hpubWire(r, "de", "Narun-Frame: end ")
		},
		"/micro": func(r string) string {
			return hpubWire(r, "", "Nats-Service-Error-Code: 409 ", "Nats-Service-Error: taken")
		},
		// Blank, the NATS Micro error headers say no error (PROTOCOL.md §1).
		"/blank-micro": func(r string) string {
			return hpubWire(r, "made", "Narun-Status: 201", "Nats-Service-Error-Code:  ", "Nats-Service-Error:")
		},
		"/interim": func(r string) string {
			return hpubWire(r, "", "Narun-Frame: interim ", "Narun-Status: 103 ", "Link: </a.css>") + hpubWire(r, "made", "Narun-Status: 201")
		},
	}
	w := dialWire(t, e.srv, wireConnect, "trailing")
	go func() {
		for {
			m, err := w.next()
			if err != nil {
				return
			}
			if f := replies[headerValue(m.header, "Narun-Path")]; f != nil {
				if _, err := io.WriteString(w.c, f(m.reply)); err != nil {
					return
				}
			}
		}
	}()
	for _, tc := range []struct {
		path     string
		status   int
		body     string
		interims int
	}{
		{"/status", 201, "made", 0},
		{"/tab", 201, "made", 0},
		{"/twice", 201, "made", 0},
		{"/stream", 201, "made", 0},
		{"/micro", 409, "", 0},
		{"/blank-micro", 201, "made", 0},
		{"/interim", 201, "made", 1},
	} {
		t.Run(tc.path[1:], func(t *testing.T) {
			interims := 0
			trace := &httptrace.ClientTrace{Got1xxResponse: func(int, textproto.MIMEHeader) error {
				interims++
				return nil
			}}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), "GET", e.hs.URL+tc.path, nil)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != tc.status || tc.body != "" && string(body) != tc.body || interims != tc.interims {
				t.Errorf("got %d %q after %d interim responses, want %d %q after %d", resp.StatusCode, firstLineOf(body), interims, tc.status, tc.body, tc.interims)
			}
		})
	}
}

func firstLineOf(b []byte) string {
	s, _, _ := strings.Cut(string(b), "\n")
	return s
}

// TestWireResponderWithoutLibrary checks what docs/PROTOCOL.md says a
// responder without a NATS client library must do: ask for headers in
// CONNECT, or the request arrives without its Narun- headers and the
// server closes the connection on the HPUB of the reply; and ask for
// no_responders to hear at once that nobody answers a pull.
func TestWireResponderWithoutLibrary(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/hello/", Service: "hello", Timeout: config.Duration(time.Second)}))
	post := func() (int, string) {
		resp, err := http.Post(e.hs.URL+"/hello/x", "text/plain", strings.NewReader("abc"))
		if err != nil {
			t.Error(err)
			return 0, ""
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	reply := func(subject string) string {
		return hpubWire(subject, "Hi", "Narun-Status: 201", "Content-Type: text/plain")
	}

	t.Run("headers", func(t *testing.T) {
		w := dialWire(t, e.srv, `CONNECT {"verbose":false,"headers":true,"no_responders":true}`+"\r\n", "hello")
		got := make(chan string, 1)
		go func() {
			code, body := post()
			got <- fmt.Sprintf("%d %s", code, body)
		}()
		m, err := w.next()
		if err != nil {
			t.Fatal(err)
		}
		if m.op != "HMSG" || !strings.HasPrefix(m.header, "NATS/1.0\r\n") || headerValue(m.header, "Narun-Method") != "POST" || m.payload != "abc" {
			t.Errorf("request %+v: want an HMSG with Narun-Method POST and the body", m)
		}
		w.send(t, reply(m.reply))
		if g := <-got; g != "201 Hi" {
			t.Errorf("client got %q, want 201 Hi", g)
		}
		// A pull to a gateway gone: the server answers at once.
		w.send(t, "SUB _INBOX.pull 2\r\n"+hpubWire("nobody _INBOX.pull", "", "Narun-Frame: pull"))
		m, err = w.next()
		if err != nil {
			t.Fatal(err)
		}
		if m.subject != "_INBOX.pull" || !strings.HasPrefix(m.header, "NATS/1.0 503") {
			t.Errorf("pull to nobody answered %+v, want NATS/1.0 503", m)
		}
	})

	t.Run("no headers", func(t *testing.T) {
		w := dialWire(t, e.srv, `CONNECT {"verbose":false}`+"\r\n", "hello")
		got := make(chan int, 1)
		go func() {
			code, _ := post()
			got <- code
		}()
		m, err := w.next()
		if err != nil {
			t.Fatal(err)
		}
		if m.op != "MSG" || m.payload != "abc" {
			t.Errorf("request %+v: want a MSG with the body alone", m)
		}
		w.send(t, reply(m.reply))
		if m, err := w.next(); err == nil {
			t.Errorf("after an HPUB without headers in CONNECT got %+v, want the connection closed", m)
		}
		if code := <-got; code != http.StatusGatewayTimeout {
			t.Errorf("client got %d, want 504 at the route's timeout", code)
		}
	})
}

// TestReplyControlCharacters has a responder that writes the protocol
// itself put control characters in a reply's header names and values,
// which HTTP forbids (RFC 9110 5.5) but for tab in a value, and which
// nats.go's reader keeps (all but LF, and a CR that ends a line). Over
// HTTP/1.1 net/http sends every one but CR and LF as it is, and a client or
// proxy behind the gateway would read them as it likes: a reply that has
// one is malformed, as a bad Narun-Status is. Before the head that is a
// 502 naming the request id; in the trailers, a response aborted; in an
// interim frame, the frame dropped, as the gateway drops the interim
// frames it cannot relay.
func TestReplyControlCharacters(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "ctl", Timeout: config.Duration(5 * time.Second)}))
	replies := map[string]func(reply string) string{
		"/nul":  func(r string) string { return hpubWire(r, "made", "X-Bad: a\x00b") },
		"/soh":  func(r string) string { return hpubWire(r, "made", "X-Bad: a\x01b") },
		"/del":  func(r string) string { return hpubWire(r, "made", "X-Bad: a\x7fb") },
		"/cr":   func(r string) string { return hpubWire(r, "made", "X-Bad: a\rb") },
		"/name": func(r string) string { return hpubWire(r, "made", "X\x01Bad: 1") },
		"/stream": func(r string) string {
			return hpubWire(r, "made", "Narun-Body: stream", "X-Bad: \x1b[2J") + hpubWire(r, "", "Narun-Frame: end")
		},
		"/trailer": func(r string) string {
			return hpubWire(r, "fi", "Narun-Body: stream", "Trailer: X-Sum") + hpubWire(r, "nal", "Narun-Frame: end", "X-Sum: 1\x00")
		},
		"/interim": func(r string) string {
			return hpubWire(r, "", "Narun-Frame: interim", "Narun-Status: 103", "Link: </a.css>\x01") + hpubWire(r, "made", "X-Tab: a\tb")
		},
	}
	w := dialWire(t, e.srv, wireConnect, "ctl")
	go func() {
		for {
			m, err := w.next()
			if err != nil {
				return
			}
			if f := replies[headerValue(m.header, "Narun-Path")]; f != nil {
				if _, err := io.WriteString(w.c, f(m.reply)); err != nil {
					return
				}
			}
		}
	}()
	for _, path := range []string{"/nul", "/soh", "/del", "/cr", "/name", "/stream", "/trailer", "/interim"} {
		t.Run(path[1:], func(t *testing.T) {
			c := sendRaw(t, e, "GET "+path+" HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
			raw, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("read the response: %v", err)
			}
			for i, b := range raw {
				if b < ' ' && b != '\t' && b != '\r' && b != '\n' || b == 0x7f || b == '\r' && (i+1 == len(raw) || raw[i+1] != '\n') {
					t.Fatalf("control character %q at byte %d reached the client:\n%q", b, i, raw)
				}
			}
			status, _, _ := strings.Cut(string(raw), "\r\n")
			switch path {
			case "/trailer":
				// The head and "fi" went out before the end frame: the
				// client must see the body cut short, not ended.
				if status != "HTTP/1.1 200 OK" || strings.Contains(string(raw), "\r\n0\r\n") {
					t.Errorf("got %q, want a 200 whose chunked body never ends", raw)
				}
			case "/interim":
				if status != "HTTP/1.1 200 OK" || !strings.Contains(string(raw), "X-Tab: a\tb\r\n") || !strings.HasSuffix(string(raw), "made") {
					t.Errorf("got %q, want the 200 alone, with its X-Tab", raw)
				}
			default:
				if status != "HTTP/1.1 502 Bad Gateway" || !strings.Contains(string(raw), "malformed reply: ") || !strings.Contains(string(raw), "request id: ") {
					t.Errorf("got %q, want a 502 that says the reply is malformed and names the request id", raw)
				}
			}
		})
	}
}

// TestReplyHeaderBlockUndecodable has a responder send a header block
// nats.go cannot read (a line without a colon, a first line that is not
// NATS/1.0's): nats.go hands such a message over with no header at all,
// and the gateway took it for a head without Narun-Status, a 200 with
// the payload, whatever status the block held.
func TestReplyHeaderBlockUndecodable(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "undecodable", Timeout: config.Duration(5 * time.Second)}))
	blocks := map[string]string{
		"/no-colon":    "NATS/1.0\r\nNarun-Status: 403\r\nX-Broken\r\n\r\n",
		"/status-line": "HTTP/1.1 403\r\nNarun-Status: 403\r\n\r\n",
	}
	w := dialWire(t, e.srv, wireConnect, "undecodable")
	go func() {
		for {
			m, err := w.next()
			if err != nil {
				return
			}
			hdr, ok := blocks[headerValue(m.header, "Narun-Path")]
			if !ok {
				continue
			}
			const payload = "secret for 403"
			msg := fmt.Sprintf("HPUB %s %d %d\r\n%s%s\r\n", m.reply, len(hdr), len(hdr)+len(payload), hdr, payload)
			if _, err := io.WriteString(w.c, msg); err != nil {
				return
			}
		}
	}()
	for path := range blocks {
		resp, err := http.Get(e.hs.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadGateway {
			t.Errorf("%s: %d %q, want 502", path, resp.StatusCode, firstLineOf(body))
		}
	}
}
