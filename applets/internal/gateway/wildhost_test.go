package gateway

import (
	"io"
	"net/http"
	"testing"

	"github.com/narun/narun/applets/internal/config"
)

// A wildcard route serves subdomains of its name, and a Host that only
// ends like one is not one: "evil.com,x.example.com" passed on as
// X-Forwarded-Host is "evil.com" to a framework that takes the first of
// its comma-separated values (Express's req.hostname), a host the route
// never admitted.
func TestWildcardHostIsASubdomain(t *testing.T) {
	e := newEnv(t, gwConfig(config.Route{Host: "*.example.com", Path: "/", Service: "wild"}))
	e.serve(t, "wild", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "served "+r.Host)
	}))
	for _, tc := range []struct {
		host string
		want int
	}{
		{"x.example.com", 200},
		{"X.Example.COM.", 200},
		{"a-b_c.d.example.com:8080", 200},
		{"xn--bcher-kva.example.com", 200},
		{"evil.com,x.example.com", 404},
		{"evil.com;x.example.com", 404},
		{"evil(x).example.com", 404},
		{"a..example.com", 404},
		{".example.com", 404},
		{"*.example.com", 404},
		{"a=b.example.com", 404},
		{"a!b.example.com", 404},
	} {
		req, err := http.NewRequest("GET", e.hs.URL+"/", nil)
		if err != nil {
			t.Fatal(err)
		}
		req.Host = tc.host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("Host %q: %v", tc.host, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want {
			t.Errorf("Host %q: %d %q, want %d", tc.host, resp.StatusCode, body, tc.want)
		}
	}
}

// A Host's port is digits (RFC 3986 3.2.3), but net/http admits there what
// a host may have (",;=!()", and over HTTP/2 spaces): routed by the name
// before it, "a.example.com:,evil.com" reached the service of the route
// for a.example.com as its X-Forwarded-Host, which Werkzeug's ProxyFix
// reads by its last comma-separated value, "evil.com", and builds the
// service's absolute links (a password reset's) on it. Refused as
// malformed, whichever route would take it.
func TestHostPortIsANumber(t *testing.T) {
	t.Parallel()
	e := newEnv(t, gwConfig(
		config.Route{Host: "a.example.com", Path: "/", Service: "named"},
		config.Route{Host: "*.example.com", Path: "/", Service: "wild"},
		config.Route{Path: "/", Service: "any"},
	))
	e.hs = startH2C(t, e)
	nc := natsConn(t, e)
	seenBy := answerAs(t, nc, "named", "wild", "any")
	for _, tc := range []struct {
		host string
		want int
	}{
		{"a.example.com:8080", 200},
		{"a.example.com:", 200},
		{"[fe80::1%25eth0]:8080", 200},
		{"a.example.com:,evil.com", 400},
		{"a.example.com:80,evil.com", 400},
		{"x.example.com:;evil.com", 400},
		{"other.example.org:8080=x", 400},
		{"[::1]:x", 400},
	} {
		resp, body := rawExchange(t, e, "GET / HTTP/1.1\r\nHost: "+tc.host+"\r\nConnection: close\r\n\r\n")
		if resp.StatusCode == 200 {
			if m := <-seenBy; tc.want != 200 {
				t.Errorf("Host %q reached %s as X-Forwarded-Host %q, want a 400", tc.host, m.Subject, m.Header.Get("X-Forwarded-Host"))
			}
		} else if resp.StatusCode != tc.want {
			t.Errorf("Host %q: status %d (%s), want %d", tc.host, resp.StatusCode, body, tc.want)
		}
	}
	authority := "a.example.com:443 evil.com"
	if got := h2Get(t, e, ":method", "GET", ":scheme", "http", ":authority", authority, ":path", "/"); got != http.StatusBadRequest {
		t.Errorf(":authority %q: status %d, want 400", authority, got)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	select {
	case m := <-seenBy:
		t.Errorf("a host with a port that is no number reached %s as X-Forwarded-Host %q", m.Subject, m.Header.Get("X-Forwarded-Host"))
	default:
	}
}
