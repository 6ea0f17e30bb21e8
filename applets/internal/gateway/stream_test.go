package gateway

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
)

// echoLines answers each line of the request body with the same line as
// soon as it reads it, and then the number of lines.
func echoLines(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Type", "text/plain")
	w.WriteHeader(http.StatusOK)
	w.(http.Flusher).Flush()
	sc := bufio.NewScanner(r.Body)
	n := 0
	for sc.Scan() {
		n++
		fmt.Fprintf(w, "%s\n", sc.Text())
		w.(http.Flusher).Flush()
	}
	if sc.Err() != nil {
		fmt.Fprintf(w, "error: %v\n", sc.Err())
		return
	}
	fmt.Fprintf(w, "%d lines\n", n)
}

// TestTrickledUploadStreams sends a body of unknown length a line at a time
// and each next line only after the service echoed the one before: that
// works only if each line reaches the service as it is sent (not when a
// chunk fills or the body ends) and the response streams back while the
// upload goes on, over HTTP/1.1 chunked and over HTTP/2 alike.
func TestTrickledUploadStreams(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "echo", Timeout: config.Duration(time.Minute)}))
	e.serve(t, "echo", http.HandlerFunc(echoLines))
	const lines = 5

	t.Run("HTTP/1.1 chunked", func(t *testing.T) {
		c := dialRaw(t, e)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
		br := bufio.NewReader(c)
		var resp *http.Response
		var body *bufio.Reader
		for i := range lines {
			line := fmt.Sprintf("line %d\n", i)
			fmt.Fprintf(c, "%x\r\n%s\r\n", len(line), line)
			if resp == nil {
				var err error
				if resp, err = http.ReadResponse(br, nil); err != nil {
					t.Fatalf("no response head while the upload goes on: %v", err)
				}
				defer resp.Body.Close()
				body = bufio.NewReader(resp.Body)
			}
			got, err := body.ReadString('\n')
			if err != nil || got != line {
				t.Fatalf("echo of %q: got %q, %v", line, got, err)
			}
		}
		fmt.Fprintf(c, "0\r\n\r\n")
		if got, err := body.ReadString('\n'); err != nil || got != fmt.Sprintf("%d lines\n", lines) {
			t.Fatalf("end of the response: %q, %v", got, err)
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			t.Fatalf("response cut: %v", err)
		}
		// A chunked request closes its connection after the response
		// (TestHTTP11ChunkedWithLengthNotFollowedByARequest), and says so.
		if !resp.Close {
			t.Errorf("response head without Connection: close: %v", resp.Header)
		}
		if n, err := io.Copy(io.Discard, br); err != nil || n != 0 {
			t.Errorf("after the response: %d more bytes, %v; want the connection closed", n, err)
		}
	})

	t.Run("HTTP/2", func(t *testing.T) {
		tr := h2cClient(t, e)
		pr, pw := io.Pipe()
		defer pw.Close()
		req, _ := http.NewRequest("POST", "http://"+e.hs.Listener.Addr().String()+"/x", pr)
		first := "line 0\n"
		go func() { _, _ = io.WriteString(pw, first) }()
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		if resp.ProtoMajor != 2 {
			t.Fatalf("answered over %s", resp.Proto)
		}
		body := bufio.NewReader(resp.Body)
		for i := range lines {
			line := fmt.Sprintf("line %d\n", i)
			if i > 0 {
				if _, err := io.WriteString(pw, line); err != nil {
					t.Fatal(err)
				}
			}
			got, err := body.ReadString('\n')
			if err != nil || got != line {
				t.Fatalf("echo of %q: got %q, %v", line, got, err)
			}
		}
		pw.Close()
		if got, err := body.ReadString('\n'); err != nil || got != fmt.Sprintf("%d lines\n", lines) {
			t.Fatalf("end of the response: %q, %v", got, err)
		}
	})
}

// TestAnswerBeforeTheBody has the service answer a body of unknown length
// without reading it while the client is still sending: the client gets
// the answer at once, over HTTP/1.1 (where the gateway still has a read of
// the body in progress) and HTTP/2.
func TestAnswerBeforeTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "deny", Timeout: config.Duration(time.Minute)}))
	e.serve(t, "deny", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	t.Run("HTTP/1.1 chunked", func(t *testing.T) {
		c := dialRaw(t, e)
		_ = c.SetDeadline(time.Now().Add(30 * time.Second))
		fmt.Fprintf(c, "POST /x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n")
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatalf("no answer while the body is unfinished: %v", err)
		}
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || string(b) != "no\n" || err != nil {
			t.Errorf("got %d %q, %v; want the service's 401 whole", resp.StatusCode, b, err)
		}
	})
	t.Run("HTTP/2", func(t *testing.T) {
		tr := h2cClient(t, e)
		pr, pw := io.Pipe()
		defer pw.Close()
		go func() { _, _ = io.WriteString(pw, "abc") }()
		req, _ := http.NewRequest("POST", "http://"+e.hs.Listener.Addr().String()+"/x", pr)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if resp.StatusCode != http.StatusUnauthorized || string(b) != "no\n" || err != nil {
			t.Errorf("got %d %q, %v; want the service's 401 whole", resp.StatusCode, b, err)
		}
	})
}

// TestResponseBeforeTheRestOfTheBody has the service start its response
// and then read an HTTP/1.1 upload with a length: the part the head did
// not carry (less than the 256 KiB net/http discards when a response starts
// with the body unread) must still reach it whole.
func TestResponseBeforeTheRestOfTheBody(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "sum", Timeout: config.Duration(time.Minute)}))
	e.serve(t, "sum", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			fmt.Fprintf(w, "error: %v", err)
			return
		}
		fmt.Fprint(w, hex.EncodeToString(h.Sum(nil)))
	}))
	data := make([]byte, e.gw.chunkSize()+100<<10)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	resp, err := http.Post(e.hs.URL+"/x", "application/octet-stream", bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil || string(b) != hex.EncodeToString(sum[:]) {
		t.Errorf("got %q, %v; want the body's sha256 %x", b, err, sum)
	}
}

// h2cClient makes e's test server one that also speaks HTTP/2 without TLS,
// and returns a transport that speaks it.
func h2cClient(t *testing.T, e *env) *http.Transport {
	t.Helper()
	e.hs = startH2C(t, e)
	tr := &http.Transport{Protocols: new(http.Protocols)}
	tr.Protocols.SetUnencryptedHTTP2(true)
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// TestLargeUploadOfUnknownLength sends 5 MiB without a length, fast: it
// arrives intact, in chunks filled while the previous ones travel; above
// the route's max_body it is refused with a 413.
func TestLargeUploadOfUnknownLength(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Path: "/", Service: "sum", Timeout: config.Duration(time.Minute)},
		config.Route{Path: "/small/", Service: "sum", MaxBody: config.Size(1 << 20)},
	))
	e.serve(t, "sum", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := sha256.New()
		if _, err := io.Copy(h, r.Body); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		fmt.Fprint(w, hex.EncodeToString(h.Sum(nil)))
	}))
	data := make([]byte, 5<<20)
	_, _ = rand.Read(data)
	sum := sha256.Sum256(data)
	want := hex.EncodeToString(sum[:])
	h1 := &http.Transport{}
	t.Cleanup(h1.CloseIdleConnections)
	h2 := h2cClient(t, e)
	for _, tc := range []struct {
		name string
		tr   *http.Transport
	}{{"HTTP/1.1 chunked", h1}, {"HTTP/2", h2}} {
		t.Run(tc.name, func(t *testing.T) {
			post := func(path string) (int, string) {
				// A reader that hides its length: the client sends the
				// body chunked (HTTP/1.1) or without content-length (h2).
				req, _ := http.NewRequest("POST", "http://"+e.hs.Listener.Addr().String()+path, io.MultiReader(bytes.NewReader(data)))
				resp, err := tc.tr.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, string(b)
			}
			if code, got := post("/x"); code != http.StatusOK || got != want {
				t.Errorf("5 MiB: %d %.80q, want 200 with sha256 %s", code, got, want)
			}
			if code, got := post("/small/x"); code != http.StatusRequestEntityTooLarge || !strings.Contains(got, "more than 1048576 bytes") {
				t.Errorf("5 MiB above max_body: %d %.80q, want 413 naming the limit", code, got)
			}
		})
	}
}
