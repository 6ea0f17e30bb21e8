package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats/natstest"
)

// TestMicroStatsCountRequests checks the figures of `nats micro stats`
// against the requests sent through the gateway, with two instances, a
// concurrent pool, panics and 5xx answers.
func TestMicroStatsCountRequests(t *testing.T) {
	t.Parallel()
	natsCLI := testutil.Tool(t, "nats")
	e := newEnv(t, gwConfig(config.Route{Path: "/", Service: "counted"}))
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/panic":
			panic("boom")
		case "/unavailable":
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	cfg := consumer.Config{Name: "counted", Version: "1.2.3", Description: "counts", Metadata: map[string]string{"team": "edge"}, MaxConcurrent: 3}
	serveOn(t, natstest.Connect(t, e.srv), cfg, h)
	serveOn(t, natstest.Connect(t, e.srv), cfg, h)

	const ok, panics, unavailable = 40, 7, 5
	paths := map[string]int{"/ok": ok, "/panic": panics, "/unavailable": unavailable}
	wantStatus := map[string]int{"/ok": 200, "/panic": 500, "/unavailable": 503}
	var wg sync.WaitGroup
	for p, n := range paths {
		for range n {
			wg.Go(func() {
				resp, err := http.Get(e.hs.URL + p)
				if err != nil {
					t.Error(err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != wantStatus[p] {
					t.Errorf("%s: status %d, want %d", p, resp.StatusCode, wantStatus[p])
				}
			})
		}
	}
	wg.Wait()

	// A service accounts for a request just after publishing its reply,
	// so the figures may trail the last response by a moment.
	var stats []micro.Stats
	var reqs, errs int
	testutil.Eventually(t, 10*time.Second, "micro stats to count every request", func() bool {
		out, err := exec.Command(natsCLI, "--server", e.srv.ClientURL(), "micro", "stats", "counted", "--json").Output()
		if err != nil {
			t.Fatalf("nats micro stats: %v", err)
		}
		stats = nil
		if err := json.Unmarshal(out, &stats); err != nil {
			t.Fatalf("decode %s: %v", out, err)
		}
		reqs, errs = 0, 0
		for _, s := range stats {
			for _, ep := range s.Endpoints {
				reqs += ep.NumRequests
				errs += ep.NumErrors
			}
		}
		return reqs >= ok+panics+unavailable
	})
	if len(stats) != 2 {
		t.Fatalf("stats of %d instances, want 2", len(stats))
	}
	for _, s := range stats {
		if s.Name != "counted" || s.Version != "1.2.3" || s.Metadata["team"] != "edge" || len(s.Endpoints) != 1 {
			t.Errorf("identity %+v", s)
		}
		for _, ep := range s.Endpoints {
			if ep.NumRequests > 0 && ep.AverageProcessingTime <= 0 {
				t.Errorf("endpoint %+v: no processing time", ep)
			}
		}
	}
	if reqs != ok+panics+unavailable || errs != panics+unavailable {
		t.Errorf("micro stats: %d requests, %d errors; want %d, %d", reqs, errs, ok+panics+unavailable, panics+unavailable)
	}

	out, err := exec.Command(natsCLI, "--server", e.srv.ClientURL(), "micro", "info", "counted").CombinedOutput()
	if err != nil {
		t.Fatalf("nats micro info: %v: %s", err, out)
	}
	for _, want := range []string{"counted", "1.2.3", "counts"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("nats micro info does not show %q:\n%s", want, out)
		}
	}
	out, err = exec.Command(natsCLI, "--server", e.srv.ClientURL(), "micro", "ls").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "counted") {
		t.Errorf("nats micro ls: %v\n%s", err, out)
	}
}
