package e2e

import (
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// operatorKey makes the key ctl signs with for the cluster at urls, and
// returns its public half, which the cluster's nodes are to trust.
func operatorKey(t *testing.T, urls string) string {
	t.Helper()
	key := filepath.Join(t.TempDir(), "signing.key")
	out, err := exec.Command(narunBinary(t), "ctl", "signing", "keygen", key).CombinedOutput()
	if err != nil {
		t.Fatalf("signing keygen: %v: %s", err, out)
	}
	signingKeys.Store(urls, key)
	t.Cleanup(func() { signingKeys.Delete(urls) })
	return strings.Fields(string(out))[0]
}

// deployHello deploys hello 1.0.0 to nodes once every member's runner
// heartbeats, and waits until every member's gateway serves it.
func (o *ops) deployHello(t *testing.T, nodes []string) {
	t.Helper()
	o.helloSum = helloSum(t)
	eventually(t, 30*time.Second, "every runner heartbeating", func() error {
		for _, h := range o.members {
			if _, err := o.heartbeat(h.Name); err != nil {
				return err
			}
		}
		return nil
	})
	mustCtl(t, o.urls, "deploy", writeSpec(t, strings.Replace(o.helloOn(nodes, "1.0.0"), o.pin(), "", 1)), "--binary", hello(t), "--wait", "--timeout", "90s")
	o.ready(t, "1.0.0", 30*time.Second)
	o.served(t, 30*time.Second, o.members...)
}

// TestUpCluster is docs/CLUSTER.md's other layout: each device runs one
// `narun up` (nats, runner and gateway in one process) trusting one
// operator key. A kill -9 of one device's narun up, a restart of each in
// turn and a power cut of the whole site each end with hello served by
// every gateway and one instance of it per device.
func TestUpCluster(t *testing.T) {
	t.Parallel()
	n := NewNet(t, "u1", "u2", "u3")
	o := &ops{edge: &edge{net: n, members: n.hosts, urls: clusterURLs(n.hosts)}}
	pub := operatorKey(t, o.urls)
	ups := map[*Host]*Proc{}
	start := func(h *Host) { ups[h] = h.Start("up", "up", "--config", h.DataDir+"/narun.toml") }
	for _, h := range n.hosts {
		h.WriteFile("narun.toml", natsSection(h, n.hosts)+fmt.Sprintf(`[gateway]
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9090"
trusted_keys = [%q]
[runner]
nats_url = %q
node_id = %q
admin_listen = "0.0.0.0:9101"
heartbeat_interval = "1s"
trusted_keys = [%q]
`, pub, o.ownFirst(h), h.Name, pub))
		start(h)
	}
	for _, h := range n.hosts {
		waitJetStream(t, h, 60*time.Second)
	}
	all := []string{"u1", "u2", "u3"}
	o.deployHello(t, all)
	settled := func(t *testing.T) {
		t.Helper()
		o.served(t, 90*time.Second, n.hosts...)
		o.ready(t, "1.0.0", 90*time.Second)
		for _, h := range n.hosts {
			if err := waitStable(h, []string{"hello"}); err != nil {
				t.Error(err)
			}
		}
	}

	t.Run("kill_9", func(t *testing.T) {
		h := n.hosts[1]
		if err := syscall.Kill(ups[h].cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-ups[h].done
		// Its apps die with it, not left running unsupervised.
		eventually(t, 10*time.Second, "hello gone from "+h.Name, func() error {
			if p := h.appProcs("--service", "hello"); len(p) != 0 {
				return fmt.Errorf("hello processes %v", p)
			}
			return nil
		})
		o.served(t, 30*time.Second, n.hosts[0], n.hosts[2])
		start(h)
		settled(t)
	})

	t.Run("rolling_restart", func(t *testing.T) {
		for _, h := range n.hosts {
			ups[h].Stop(t)
			start(h)
			waitJetStream(t, h, 60*time.Second)
			o.served(t, 30*time.Second, h)
		}
		settled(t)
	})

	t.Run("site_power_cut", func(t *testing.T) {
		for _, h := range n.hosts {
			h.Kill()
		}
		for _, h := range n.hosts {
			start(h)
		}
		settled(t)
		mustCtl(t, o.urls, "deploy", writeSpec(t, o.helloOn(all, "1.0.1")), "--wait", "--timeout", "90s")
	})
}
