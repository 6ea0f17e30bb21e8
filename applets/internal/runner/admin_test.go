package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestAdminPageInBrowser renders the admin page in headless Chromium and
// finds every instance in the table of the rendered DOM.
func TestAdminPageInBrowser(t *testing.T) {
	t.Parallel()
	chromium := testutil.Tool(t, "chromium")
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n")
	list := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))
	srv := httptest.NewServer(tr.AdminHandler())
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(), "--dump-dom", srv.URL+"/").Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	dom := string(out)
	if !strings.Contains(dom, `<table id="instances">`) {
		t.Fatalf("no instance table in the rendered page:\n%s", dom)
	}
	for _, in := range list {
		row := fmt.Sprintf(`<tr data-app="hello" data-instance="%s" data-state="healthy">`, in.ID)
		if !strings.Contains(dom, row) {
			t.Errorf("rendered page lacks row %s:\n%s", row, dom)
		}
		if !strings.Contains(dom, fmt.Sprintf("<td>%d</td>", in.PID)) {
			t.Errorf("rendered page lacks pid %d", in.PID)
		}
	}
}

// metricValue reads the value of one series, name and labels as
// serveMetrics writes them, from a /metrics page.
func metricValue(metrics, series string) (float64, bool) {
	for line := range strings.Lines(metrics) {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

func scrape(t *testing.T, tr *testRunner) string {
	t.Helper()
	rec := httptest.NewRecorder()
	tr.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

// An alert on narun_runner_instances{state="healthy"} < 1 must fire when
// no instance is healthy: a state no instance is in reads 0, not nothing.
func TestMetricsInstancesEveryState(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	metrics := scrape(t, tr)
	if v, ok := metricValue(metrics, `narun_runner_instances{state="healthy"}`); !ok || v != 0 {
		t.Errorf("no instances: healthy instances read %v (present %v), want 0\n%s", v, ok, metrics)
	}

	c.deploy(t, "crashy", "1.0.0", probeBin, "args = [\"crash\"]\n[restart]\ninitial_backoff = \"10ms\"\nmax_backoff = \"40ms\"\nmax_failures = 4\n")
	tr.wait(t, "crashy", "failed", allIn(1, state.Failed))
	metrics = scrape(t, tr)
	for st, want := range map[state.State]float64{state.Healthy: 0, state.Backoff: 0, state.Failed: 1} {
		series := fmt.Sprintf(`narun_runner_instances{state=%q}`, st)
		if v, ok := metricValue(metrics, series); !ok || v != want {
			t.Errorf("one failed instance: %s reads %v (present %v), want %v\n%s", series, v, ok, want, metrics)
		}
	}
}

// burnedCPU is the CPU time, in seconds, the probe's burn mode spends
// before it exits (burnCPU in testdata/probe).
const burnedCPU = 0.3

// narun_runner_instance_cpu_seconds_total is a counter: an instance's
// restart, which starts a new cgroup or process at zero, must not read as
// a counter reset, and the instance keeps its series between runs.
func TestMetricsCPUAcrossRestarts(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		start func(t *testing.T) (*cluster, *testRunner)
		extra string
	}{
		{"exec", cgroupRunner, ""},
		{"exec without cgroup", func(t *testing.T) (*cluster, *testRunner) {
			c := newCluster(t, nil)
			return c, startTunedRunner(t, c, nil, func(r *Runner) {
				r.caps.CgroupVersion = 0
				r.caps.Sandbox = false
			})
		}, ""},
		{"sandbox", func(t *testing.T) (*cluster, *testRunner) {
			c := newCluster(t, nil)
			return c, startSandboxRunner(t, c, nil)
		}, "mode = \"sandbox\"\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			c, tr := tc.start(t)
			// again restarts at once; waiting stays in backoff for the
			// rest of the test.
			c.deploy(t, "again", "1.0.0", probeBin, tc.extra+"args = [\"burn\"]\n[restart]\ninitial_backoff = \"10ms\"\n")
			c.deploy(t, "waiting", "1.0.0", probeBin, tc.extra+"args = [\"burn\"]\n[restart]\ninitial_backoff = \"1h\"\nmax_backoff = \"1h\"\n")

			// cpu reads the instance's counter in every scrape of a wait,
			// and fails the test where it went down.
			highest := map[string]float64{}
			cpu := func(in state.Instance) (float64, bool) {
				series := fmt.Sprintf(`narun_runner_instance_cpu_seconds_total{app=%q,instance=%q,node=%q}`, in.App, in.ID, node)
				v, ok := metricValue(scrape(t, tr), series)
				if ok && v < highest[in.ID] {
					t.Errorf("%s went down from %v to %v (instance %s, restarts %d)", series, highest[in.ID], v, in.State, in.Restarts)
				}
				highest[in.ID] = max(highest[in.ID], v)
				return v, ok
			}
			watched := func(done func(state.Instance) bool) func([]state.Instance) bool {
				return func(l []state.Instance) bool {
					if len(l) != 1 {
						return false
					}
					cpu(l[0])
					return done(l[0])
				}
			}

			in := tr.wait(t, "again", "a healthy run after a restart", watched(func(in state.Instance) bool {
				return in.Restarts >= 1 && in.State == state.Healthy
			}))[0]
			if v, ok := cpu(in); !ok || v < burnedCPU {
				t.Errorf("after a restart, the CPU seconds of again read %v (present %v), less than its first run's %v", v, ok, burnedCPU)
			}
			in = tr.wait(t, "waiting", "backoff", watched(func(in state.Instance) bool {
				return in.State == state.Backoff
			}))[0]
			if v, ok := cpu(in); !ok || v < burnedCPU {
				t.Errorf("in backoff, the CPU seconds of waiting read %v (present %v), less than its run's %v", v, ok, burnedCPU)
			}
		})
	}
}

// An operator reads the admin page with curl as much as in a browser, and
// an app's output must not act on the terminal as narun ctl logs keeps it
// from doing: no escape sequence, BEL, C1 control, bidirectional override
// or byte that is not UTF-8 of an app, or of another runner's heartbeat,
// reaches the page raw. The probe
// prints no text it is given, so a shell script prints the exact bytes.
func TestAdminPageEscapesAppOutput(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	script := filepath.Join(t.TempDir(), "noisy")
	// \377\376 is not UTF-8, \302\233 is U+009B (CSI, a C1 control),
	// \342\200\256 is U+202E (right-to-left override).
	body := `#!/bin/sh
printf 'noisy \377\376\033[31mred\033]0;title\007\n' >&2
printf 'noisy \302\233c \342\200\256reversed\n'
exec sleep 600
`
	if err := os.WriteFile(script, []byte(body), 0o755); err != nil {
		t.Fatal(err)
	}
	c.deploy(t, "noisy", "1.0.0", script, "")
	testutil.Eventually(t, 10*time.Second, "noisy printing both lines", func() bool {
		n := 0
		for _, l := range tr.lines("noisy") {
			if strings.HasPrefix(l, "noisy ") {
				n++
			}
		}
		return n == 2
	})

	// Another runner with this node id names its host in its heartbeat,
	// which the page shows. Written until seen: this runner's own
	// heartbeat may replace it before it is read.
	other, err := json.Marshal(state.Node{ID: node, Host: "host\x1b]0;title\a", Boot: "boot\u202e"})
	if err != nil {
		t.Fatal(err)
	}
	var page string
	testutil.Eventually(t, 10*time.Second, "the page to show the other runner", func() bool {
		if _, err := c.nodes.Put(context.Background(), node, other); err != nil {
			t.Fatalf("write heartbeat: %v", err)
		}
		rec := httptest.NewRecorder()
		tr.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		page = rec.Body.String()
		return strings.Contains(page, "is also used by another runner")
	})
	for name, raw := range map[string]string{
		"ESC":                    "\x1b",
		"BEL":                    "\a",
		"C1 CSI":                 "\u009b",
		"right-to-left override": "\u202e",
		"byte FF":                "\xff",
		"byte FE":                "\xfe",
	} {
		if strings.Contains(page, raw) {
			t.Errorf("the admin page holds a raw %s (%q)", name, raw)
		}
	}
	if !utf8.ValidString(page) {
		t.Error("the admin page is not UTF-8")
	}
	// Escaped, the lines are still there to read.
	for _, want := range []string{`noisy \xff\xfe\x1b[31mred\x1b]0;title\x07`, `noisy \xc2\x9bc \u202ereversed`, `host host\x1b]0;title\x07, boot id boot\u202e`} {
		if !strings.Contains(page, want) {
			t.Errorf("the admin page lacks the line %s:\n%q", want, page)
		}
	}
}
