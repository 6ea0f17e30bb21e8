package e2e

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// helloDir holds the hello fixture built for this run; TestMain removes it.
var helloDir string

// helloBinary builds the hello fixture once per run.
var helloBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "narun-e2e-hello")
	if err != nil {
		return "", err
	}
	helloDir = dir
	p := filepath.Join(dir, "hello")
	out, err := exec.Command("go", "build", "-o", p, "github.com/narun/narun/testdata/apps/hello").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("build hello: %v: %s", err, out)
	}
	return p, nil
})

func hello(t *testing.T) string {
	t.Helper()
	p, err := helloBinary()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// helloSum is the hex SHA-256 of the hello fixture; ctl names its objects
// after the first 12 digits.
func helloSum(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile(hello(t))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// ctlResult is what one `narun ctl` run printed and how it exited.
type ctlResult struct {
	Out  string
	Code int
}

// ctl runs `narun ctl` from the test's own namespace against natsURL.
func ctl(t *testing.T, natsURL string, stdin string, args ...string) ctlResult {
	t.Helper()
	r, err := runCtl(narunBinary(t), natsURL, stdin, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// runCtl is ctl for a goroutine other than the test's, which must not
// end the test: a failure to run ctl at all is its error.
func runCtl(binary, natsURL string, stdin string, args ...string) (ctlResult, error) {
	if key, ok := signingKeys.Load(natsURL); ok {
		args = append([]string{"--signing-key", key.(string)}, args...)
	}
	args = append(ctlTLSFlags(natsURL), args...)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, binary, append([]string{"ctl", "--nats-url", natsURL, "--timeout", "10s"}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	r := ctlResult{Out: out.String()}
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.Code = ee.ExitCode()
	case err != nil:
		return r, fmt.Errorf("run narun ctl %s: %w", strings.Join(args, " "), err)
	}
	return r, nil
}

// signingKeys holds, by NATS URL, the node key of the narun up there: its
// operator's ctl signs with it, as ctl on the device finds it itself.
var signingKeys sync.Map

// mustCtl runs ctl and fails the test unless it succeeds.
func mustCtl(t *testing.T, natsURL string, args ...string) string {
	t.Helper()
	r := ctl(t, natsURL, "", args...)
	if r.Code != 0 {
		t.Fatalf("narun ctl %s: exit %d:\n%s", strings.Join(args, " "), r.Code, r.Out)
	}
	return r.Out
}

// writeSpec writes an app spec into a temp dir and returns its path.
func writeSpec(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "app.toml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

type appStatus struct {
	Name      string `json:"name"`
	Version   string `json:"version"`
	Desired   int    `json:"desired"`
	Ready     int    `json:"ready"`
	Instances []struct {
		Node     string `json:"node"`
		ID       string `json:"id"`
		State    string `json:"state"`
		PID      int    `json:"pid"`
		Restarts int    `json:"restarts"`
		Reason   string `json:"reason"`
		Version  string `json:"version"`
		Healthy  bool   `json:"healthy"`
	} `json:"instances"`
}

func status(t *testing.T, natsURL, app string) (appStatus, error) {
	t.Helper()
	r := ctl(t, natsURL, "", "app", "status", app, "--json")
	var s appStatus
	if r.Code != 0 {
		return s, fmt.Errorf("app status %s: exit %d: %s", app, r.Code, strings.TrimSpace(r.Out))
	}
	if err := json.Unmarshal([]byte(r.Out), &s); err != nil {
		return s, fmt.Errorf("app status %s: %v: %s", app, err, r.Out)
	}
	return s, nil
}

// healthyOn counts healthy instances of version per node.
func (s appStatus) healthyOn(version string) map[string]int {
	m := map[string]int{}
	for _, in := range s.Instances {
		if in.Healthy && (version == "" || in.Version == version) {
			m[in.Node]++
		}
	}
	return m
}

// eventually polls cond until it returns nil or timeout passes, and returns
// how long it took.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		err := cond()
		if err == nil {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not true after %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// httpOK waits until url answers 200.
func httpOK(url string) error {
	c := http.Client{Timeout: 2 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s: %s", url, resp.Status)
	}
	return nil
}

// natsConn connects to urls from the test namespace.
func natsConn(t *testing.T, urls string) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(urls, append(natsTLSOptions(urls), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond), nats.RetryOnFailedConnect(true))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// bucket opens the KV bucket name through urls for the rest of the test.
func bucket(t *testing.T, urls, name string) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natsConn(t, urls))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, name)
	if err != nil {
		t.Fatalf("open %s: %v", name, err)
	}
	return kv
}

// serviceStats asks every instance of a NATS Micro service for its
// statistics and returns requests served per instance id, collecting until
// want instances answered or the deadline passed.
func serviceStats(nc *nats.Conn, service string, want int, timeout time.Duration) (map[string]int, error) {
	inbox := nats.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	defer sub.Unsubscribe()
	if err := nc.PublishRequest("$SRV.STATS."+service, inbox, nil); err != nil {
		return nil, err
	}
	got := map[string]int{}
	deadline := time.Now().Add(timeout)
	for len(got) < want {
		m, err := sub.NextMsg(time.Until(deadline))
		if err != nil {
			return got, fmt.Errorf("%d of %d instances answered: %w", len(got), want, err)
		}
		var st struct {
			ID        string `json:"id"`
			Endpoints []struct {
				NumRequests int `json:"num_requests"`
			} `json:"endpoints"`
		}
		if err := json.Unmarshal(m.Data, &st); err != nil {
			return got, fmt.Errorf("stats reply: %w", err)
		}
		n := 0
		for _, e := range st.Endpoints {
			n += e.NumRequests
		}
		got[st.ID] = n
	}
	return got, nil
}

// appProcs lists the pids in the host's namespace whose command line
// contains every one of words.
func (h *Host) appProcs(words ...string) []int {
	out, _ := exec.Command("ip", "netns", "pids", h.NS).Output()
	var pids []int
	for _, f := range strings.Fields(string(out)) {
		var pid int
		if _, err := fmt.Sscan(f, &pid); err != nil {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(cmdline), "\x00"), "\x00")
		if !matchArgs(args, words) {
			continue
		}
		pids = append(pids, pid)
	}
	return pids
}

func matchArgs(args, words []string) bool {
	for _, w := range words {
		found := false
		for _, a := range args {
			if a == w || filepath.Base(a) == w {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}
