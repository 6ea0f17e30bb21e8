package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"
)

// ops is docs/CLUSTER.md's three devices as an operator runs them: each
// member runs nats, a runner and a gateway with a routes cache, and its
// clients list its own server first.
type ops struct {
	*edge
	gws map[*Host]*Proc
}

func newOps(t *testing.T) *ops {
	t.Helper()
	n := NewNet(t, "o1", "o2", "o3")
	o := &ops{edge: &edge{net: n, members: n.hosts, runners: map[*Host]*Proc{}}, gws: map[*Host]*Proc{}}
	o.urls = clusterURLs(o.members)
	o.nats = cluster(t, o.members)
	for _, h := range o.members {
		o.runners[h] = startRunner(t, h)
		o.startGW(t, h)
	}
	o.helloSum = helloSum(t)
	return o
}

// ownFirst is the members' URL list with h's server first.
func (o *ops) ownFirst(h *Host) string { return ownFirst(h, o.members) }

func (o *ops) startGW(t *testing.T, h *Host) {
	t.Helper()
	o.gws[h] = h.Start("gw", "gw", "--nats-url", o.ownFirst(h), "--listen", "0.0.0.0:8080", "--admin-listen", "0.0.0.0:9090",
		"--routes-cache", h.DataDir+"/gw-routes.json")
}

func gwURL(h *Host) string { return "http://" + h.Addr + ":8080/hello/" }

// bootHost starts a member's three services, as its supervisor would at
// boot, without waiting for anything.
func (o *ops) bootHost(t *testing.T, h *Host) {
	t.Helper()
	o.nats[h] = startNATS(t, h)
	o.runners[h] = startRunner(t, h)
	o.startGW(t, h)
}

// served waits until every host in hosts serves /hello/ through its own
// gateway.
func (o *ops) served(t *testing.T, timeout time.Duration, hosts ...*Host) {
	t.Helper()
	for _, h := range hosts {
		eventually(t, timeout, "/hello/ served by the gateway of "+h.Name, func() error {
			return helloRequest(context.Background(), httpClient, gwURL(h), "probe")
		})
	}
}

func (o *ops) helloOn(nodes []string, v string) string {
	return fmt.Sprintf(`name = "hello"
version = %q
args = ["--service", "hello"]
nodes = [%s]
[health]
interval = "1s"
[[routes]]
path = "/hello/"
`, v, `"`+strings.Join(nodes, `", "`)+`"`) + o.pin()
}

// TestOperatorCluster runs three devices as docs/CLUSTER.md says and puts
// them through what their operator meets: a device lost and back, a deploy
// and a delete while it is away, the JetStream meta leader cut off from
// the others, a restart of every device in turn (an upgrade) and a power
// cut of the whole site.
func TestOperatorCluster(t *testing.T) {
	t.Parallel()
	o := newOps(t)
	h1, h2, h3 := o.members[0], o.members[1], o.members[2]
	eventually(t, 30*time.Second, "three runners heartbeating", func() error {
		for _, h := range o.members {
			if _, err := o.heartbeat(h.Name); err != nil {
				return err
			}
		}
		return nil
	})
	all := []string{h1.Name, h2.Name, h3.Name}
	mustCtl(t, o.urls, "deploy", writeSpec(t, strings.Replace(o.helloOn(all, "1.0.0"), o.pin(), "", 1)), "--binary", hello(t), "--wait", "--timeout", "90s")
	o.ready(t, "1.0.0", 30*time.Second)
	o.served(t, 30*time.Second, o.members...)
	gone := strings.Replace(strings.Replace(o.helloOn(all, "1.0.0"), `"hello"`, `"gone"`, 2), "[[routes]]\npath = \"/hello/\"\n", "", 1)
	mustCtl(t, o.urls, "deploy", writeSpec(t, gone), "--wait", "--timeout", "90s")

	t.Run("node_lost", func(t *testing.T) {
		h3.Kill()
		o.served(t, 30*time.Second, h1, h2)
		// ctl pointed at either remaining device alone.
		for _, h := range []*Host{h1, h2} {
			eventually(t, 30*time.Second, "status via "+h.Name+" shows o3's instance as unknown", func() error {
				s, err := status(t, "nats://"+h.Addr+":4222", "hello")
				if err != nil {
					return err
				}
				for _, in := range s.Instances {
					if in.Node == h3.Name && in.State == "unknown" {
						return nil
					}
				}
				return fmt.Errorf("instances %+v", s.Instances)
			})
		}
		// A deploy right after the loss, while h3's heartbeat has not
		// expired yet: done on the two others, and saying h3 did not get it.
		r := ctl(t, o.ownFirst(h1), "", "deploy", writeSpec(t, o.helloOn(all, "1.0.1")), "--wait", "--timeout", "60s")
		if r.Code != 0 || !strings.Contains(r.Out, "not rolled out on "+h3.Name) {
			t.Errorf("deploy --wait with %s down: exit %d, want 0 naming %s as not rolled out:\n%s", h3.Name, r.Code, h3.Name, r.Out)
		}
		mustCtl(t, o.ownFirst(h2), "app", "delete", "gone")
		eventually(t, 60*time.Second, "o3 shown missing once its heartbeat expired", func() error {
			r := ctl(t, o.ownFirst(h2), "", "app", "status", "hello")
			if r.Code != 0 || !strings.Contains(r.Out, "2/3 ready") || !strings.Contains(r.Out, h3.Name+"    -         missing") {
				return fmt.Errorf("exit %d:\n%s", r.Code, r.Out)
			}
			return nil
		})

		o.bootHost(t, h3)
		o.ready(t, "1.0.1", 90*time.Second)
		o.served(t, 30*time.Second, h3)
		eventually(t, 30*time.Second, "gone stopped on "+h3.Name, func() error {
			if p := h3.appProcs("--service", "gone"); len(p) != 0 {
				return fmt.Errorf("gone runs on %s: %v", h3.Name, p)
			}
			return nil
		})
		if err := waitStable(h3, []string{"hello"}); err != nil {
			t.Error(err)
		}
		// Not even for a moment, from the spec it had cached.
		if out := o.runners[h3].Output(); strings.Contains(out, "app=gone") {
			t.Errorf("the runner of %s acted on gone after the delete:\n%s", h3.Name, lastLines(out, 30))
		}
		if out := mustCtl(t, o.urls, "app", "list"); strings.Contains(out, "gone") {
			t.Errorf("gone is listed again after %s came back:\n%s", h3.Name, out)
		}
	})

	t.Run("back_before_its_link", func(t *testing.T) {
		mustCtl(t, o.urls, "deploy", writeSpec(t, gone), "--wait", "--timeout", "60s")
		h3.Kill()
		mustCtl(t, o.ownFirst(h1), "app", "delete", "gone")
		// The device boots while its link is still down: it can learn
		// nothing of the delete, and runs what it had cached.
		h3.Cut()
		healed := false
		defer func() {
			if !healed {
				h3.Heal()
			}
		}()
		o.bootHost(t, h3)
		eventually(t, 30*time.Second, "gone started on "+h3.Name+" from its cached spec", func() error {
			if p := h3.appProcs("--service", "gone"); len(p) != 1 {
				return fmt.Errorf("gone processes on %s: %v", h3.Name, p)
			}
			return nil
		})
		h3.Heal()
		healed = true
		eventually(t, 90*time.Second, "gone stopped on "+h3.Name+" once it reads narun-apps", func() error {
			if p := h3.appProcs("--service", "gone"); len(p) != 0 {
				return fmt.Errorf("gone runs on %s: %v", h3.Name, p)
			}
			return nil
		})
		o.ready(t, "1.0.1", 60*time.Second)
		// Listed, as deleted, until the node's heartbeat no longer reports
		// the instance it stopped; then for good.
		eventually(t, 30*time.Second, "gone no longer listed once "+h3.Name+" stopped it", func() error {
			if out := mustCtl(t, o.urls, "app", "list"); strings.Contains(out, "gone") {
				return fmt.Errorf("gone is listed after %s came back:\n%s", h3.Name, out)
			}
			return nil
		})
	})

	t.Run("meta_leader_partitioned", func(t *testing.T) {
		lh := h1
		if name := metaLeader(o.members); name != "" {
			for _, h := range o.members {
				if h.Name == name {
					lh = h
				}
			}
		}
		var rest []*Host
		for _, h := range o.members {
			if h != lh {
				rest = append(rest, h)
			}
		}
		pid := lh.appProcs("--service", "hello")
		split(t, lh, rest)
		healed := false
		defer func() {
			if !healed {
				heal(t, lh, rest)
			}
		}()
		// Each side's gateway keeps serving: the minority's from its own
		// instance.
		o.served(t, 30*time.Second, o.members...)
		majority := o.ownFirst(rest[0])
		eventually(t, 60*time.Second, "deploy accepted by the majority", func() error {
			if r := ctl(t, majority, "", "deploy", writeSpec(t, o.helloOn(all, "1.0.2"))); r.Code != 0 {
				return fmt.Errorf("exit %d: %s", r.Code, strings.TrimSpace(r.Out))
			}
			return nil
		})
		if p := lh.appProcs("--service", "hello"); len(p) != 1 || p[0] != pid[0] {
			t.Errorf("hello on the cut-off %s: processes %v, want %v still running", lh.Name, p, pid)
		}
		heal(t, lh, rest)
		healed = true
		o.ready(t, "1.0.2", 90*time.Second)
		for _, h := range o.members {
			if err := waitStable(h, []string{"hello"}); err != nil {
				t.Error(err)
			}
		}
	})

	t.Run("rolling_restart", func(t *testing.T) {
		for i, h := range o.members {
			via := o.members[(i+1)%3]
			l := startLoad(gwURL(via), 2)
			if err := l.waitOK(20, 20*time.Second); err != nil {
				l.Stop()
				t.Fatal(err)
			}
			restarted := time.Now()
			h.StopAll()
			o.bootHost(t, h)
			waitJetStream(t, h, 60*time.Second)
			eventually(t, 60*time.Second, "hello back on "+h.Name, func() error { return o.freshHello(h, restarted) })
			o.served(t, 30*time.Second, h)
			ok, fails := l.Stop()
			t.Logf("restart of %s: %d requests ok through %s; failures: %s", h.Name, ok, via.Name, summary(fails))
			if len(fails) > 2 {
				t.Errorf("restart of %s: %d requests through %s failed, more than the 2 in flight: %s", h.Name, len(fails), via.Name, summary(fails))
			}
		}
		o.ready(t, "1.0.2", 30*time.Second)
	})

	t.Run("site_power_cut", func(t *testing.T) {
		for _, h := range o.members {
			h.Kill()
		}
		for _, h := range o.members {
			o.bootHost(t, h)
		}
		o.served(t, 90*time.Second, o.members...)
		o.ready(t, "1.0.2", 90*time.Second)
		for _, h := range o.members {
			if err := waitStable(h, []string{"hello"}); err != nil {
				t.Error(err)
			}
		}
		mustCtl(t, o.urls, "deploy", writeSpec(t, o.helloOn(all, "1.0.3")), "--wait", "--timeout", "60s")
	})
}

// ready waits until app status counts every instance of hello at version v
// ready, by fresh heartbeats: healthy flags alone may be a dead node's last
// word.
func (o *ops) ready(t *testing.T, v string, timeout time.Duration) {
	t.Helper()
	eventually(t, timeout, "hello "+v+" ready on every member", func() error {
		s, err := status(t, o.urls, "hello")
		if err != nil {
			return err
		}
		if s.Version != v || s.Desired != len(o.members) || s.Ready != s.Desired || len(s.Instances) != s.Desired {
			return fmt.Errorf("version %s, %d/%d ready, instances %+v", s.Version, s.Ready, s.Desired, s.Instances)
		}
		return nil
	})
}

// metaLeader names the JetStream meta leader as the members' monitoring
// ports report it, or "" when none does.
func metaLeader(hosts []*Host) string {
	for _, h := range hosts {
		resp, err := httpClient.Get("http://" + h.Addr + ":8222/jsz")
		if err != nil {
			continue
		}
		var v struct {
			Meta struct {
				Leader string `json:"leader"`
			} `json:"meta_cluster"`
		}
		err = json.NewDecoder(resp.Body).Decode(&v)
		resp.Body.Close()
		if err == nil && v.Meta.Leader != "" {
			return v.Meta.Leader
		}
	}
	return ""
}

// split cuts the links between h and each of others, both ways, leaving
// every host reachable from the test.
func split(t *testing.T, h *Host, others []*Host) {
	for _, m := range others {
		mustIP(t, "-n", h.NS, "route", "add", "blackhole", m.Addr+"/32")
		mustIP(t, "-n", m.NS, "route", "add", "blackhole", h.Addr+"/32")
	}
}

func heal(t *testing.T, h *Host, others []*Host) {
	for _, m := range others {
		mustIP(t, "-n", h.NS, "route", "del", "blackhole", m.Addr+"/32")
		mustIP(t, "-n", m.NS, "route", "del", "blackhole", h.Addr+"/32")
	}
}
