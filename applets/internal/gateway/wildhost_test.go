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
