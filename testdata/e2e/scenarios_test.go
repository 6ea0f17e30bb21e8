package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// edge is the shared layout of the fault scenarios: three cluster members
// running nats and a runner, a gateway host and a leaf device.
type edge struct {
	net      *Net
	members  []*Host
	gwHost   *Host
	leaf     *Host
	nats     map[*Host]*Proc
	runners  map[*Host]*Proc
	urls     string // NATS URLs of the members
	gwURL    string // the gateway's /hello/ URL
	helloSum string
}

const workers = 6

func newEdge(t *testing.T) *edge {
	t.Helper()
	start := time.Now()
	n := NewNet(t, "h1", "h2", "h3", "gw", "leaf")
	e := &edge{net: n, members: n.hosts[:3], gwHost: n.hosts[3], leaf: n.hosts[4], runners: map[*Host]*Proc{}}
	e.urls = clusterURLs(e.members)
	e.nats = cluster(t, e.members)
	for _, h := range e.members {
		e.runners[h] = startRunner(t, h)
	}
	e.gwHost.Start("gw", "gw", "--nats-url", e.urls, "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090")
	e.gwURL = "http://" + e.gwHost.Addr + ":8080/hello/"
	eventually(t, 30*time.Second, "gateway ready", func() error { return httpOK("http://" + e.gwHost.Addr + ":9090/readyz") })
	eventually(t, 30*time.Second, "three runners heartbeating", func() error {
		for _, h := range e.members {
			if _, err := e.heartbeat(h.Name); err != nil {
				return err
			}
		}
		return nil
	})
	e.helloSum = helloSum(t)
	t.Logf("cluster of 3 + gateway up in %s", time.Since(start).Round(time.Millisecond))
	return e
}

// heartbeat is the part of a runner's narun-nodes entry the suite reads.
type heartbeat struct {
	ID        string    `json:"id"`
	Started   time.Time `json:"started"`
	Time      time.Time `json:"time"`
	Instances []struct {
		App     string `json:"app"`
		ID      string `json:"id"`
		State   string `json:"state"`
		PID     int    `json:"pid"`
		Version string `json:"version"`
		Healthy bool   `json:"healthy"`
		Reason  string `json:"reason"`
	} `json:"instances"`
}

func (e *edge) heartbeat(node string) (heartbeat, error) {
	var hb heartbeat
	// A fresh connection each time: a long-lived one could be stuck on a
	// member that was just cut off.
	nc, err := nats.Connect(e.urls, append(natsTLSOptions(e.urls), nats.Timeout(time.Second))...)
	if err != nil {
		return hb, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return hb, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "narun-nodes")
	if err != nil {
		return hb, fmt.Errorf("open narun-nodes: %w", err)
	}
	en, err := kv.Get(ctx, node)
	if err != nil {
		return hb, fmt.Errorf("heartbeat of %s: %w", node, err)
	}
	if err := json.Unmarshal(en.Value(), &hb); err != nil {
		return hb, fmt.Errorf("heartbeat of %s: %w", node, err)
	}
	return hb, nil
}

// helloSpec is the spec of the routed hello app at version v, pinned to the
// binary uploaded by the first deploy when pinned is set.
func (e *edge) helloSpec(v string, pinned bool) string {
	s := fmt.Sprintf(`name = "hello"
version = %q
args = ["--service", "hello"]
labels = { role = "edge" }
replicas = 1
[health]
interval = "1s"
[[routes]]
path = "/hello/"
`, v)
	if pinned {
		s += e.pin()
	}
	return s
}

func (e *edge) pin() string {
	return fmt.Sprintf("[binaries.amd64]\nobject = \"hello/1.0.0/linux-amd64-%s\"\nsha256 = %q\n", e.helloSum[:12], e.helloSum)
}

// waitVersion waits until each of nodes runs one healthy hello of version v.
func (e *edge) waitVersion(t *testing.T, app, v string, timeout time.Duration, nodes ...*Host) time.Duration {
	t.Helper()
	return eventually(t, timeout, fmt.Sprintf("%s %s healthy on %d nodes", app, v, len(nodes)), func() error {
		s, err := status(t, e.urls, app)
		if err != nil {
			return err
		}
		on := s.healthyOn(v)
		for _, h := range nodes {
			if on[h.Name] != 1 {
				return fmt.Errorf("%s has %d healthy instances of %s, want 1 (status %+v)", h.Name, on[h.Name], v, s.Instances)
			}
		}
		return nil
	})
}

func TestEdgeCluster(t *testing.T) {
	t.Parallel()
	e := newEdge(t)
	steps := []struct {
		name string
		run  func(*testing.T)
	}{
		{"spread", e.spread},
		{"runner_restart", e.runnerRestart},
		{"kill_host", e.killHost},
		{"partition", e.partition},
		{"rolling_nats", e.rollingNATS},
		{"leaf", e.leafCutOff},
		{"disk_full", e.diskFull},
	}
	for _, s := range steps {
		// A step that stopped half-way (t.Fatal) may leave the cluster in
		// no state for the next ones: they run only if it reconverges.
		finished := false
		t.Run(s.name, func(t *testing.T) {
			s.run(t)
			finished = true
		})
		if !finished && !t.Run("reconverge_after_"+s.name, e.reconverge) {
			t.FailNow()
		}
	}
}

// reconverge waits until every member is healthy and runs one healthy
// hello, whatever its version.
func (e *edge) reconverge(t *testing.T) {
	start := time.Now()
	for _, h := range e.members {
		waitJetStream(t, h, 90*time.Second)
	}
	for _, h := range e.members {
		eventually(t, 90*time.Second, "hello on "+h.Name, func() error {
			hb, err := e.heartbeat(h.Name)
			if err != nil {
				return err
			}
			if time.Since(hb.Time) > 5*time.Second {
				return fmt.Errorf("last heartbeat of %s at %s", h.Name, hb.Time)
			}
			for _, in := range hb.Instances {
				if in.App == "hello" && in.Healthy {
					return nil
				}
			}
			return fmt.Errorf("no healthy hello on %s", h.Name)
		})
	}
	t.Logf("cluster reconverged in %s", time.Since(start).Round(100*time.Millisecond))
}

// spread: scenario 1. One replica per node by label; the gateway's requests
// are shared by the three instances through the NATS queue group.
func (e *edge) spread(t *testing.T) {
	start := time.Now()
	out := mustCtl(t, e.urls, "deploy", writeSpec(t, e.helloSpec("1.0.0", false)), "--binary", hello(t), "--wait", "--timeout", "60s")
	t.Logf("deploy --wait took %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(out))
	e.waitVersion(t, "hello", "1.0.0", 15*time.Second, e.members...)
	eventually(t, 15*time.Second, "route served by the gateway", func() error {
		return helloRequest(context.Background(), httpClient, e.gwURL, "probe")
	})
	nc := natsConn(t, e.urls)
	before, err := serviceStats(nc, "hello", 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	const n = 300
	failed := 0
	for i := range n {
		if err := helloRequest(context.Background(), httpClient, e.gwURL, fmt.Sprint("r", i)); err != nil {
			failed++
			t.Logf("request %d: %v", i, err)
		}
	}
	after, err := serviceStats(nc, "hello", 3, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var shares []string
	for id, c := range after {
		d := c - before[id]
		shares = append(shares, fmt.Sprint(d))
		if d == 0 {
			t.Errorf("instance %s served none of %d requests", id, n)
		}
	}
	if failed > 0 {
		t.Errorf("%d of %d requests failed", failed, n)
	}
	record(t, "scenario", "1. deploy to role=edge, 1 replica per node; requests through the gateway",
		fmt.Sprintf("3 instances (one per node); %d requests shared %s by the queue group", n, strings.Join(shares, "/")),
		fmt.Sprintf("%d of %d", failed, n), "–")
}
