package up_test

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// The first start of a cluster of narun up nodes: JetStream answers only
// once the members have elected a leader, which needs the others up. The
// first member waits for them instead of giving up, then serves.
func TestUpFirstClusterStartWaitsForMembers(t *testing.T) {
	t.Parallel()
	natsAddr, runnerAdmin, dataDir := testutil.FreeAddr(t), testutil.FreeAddr(t), t.TempDir()
	config, clusterAddrs, routes := firstMemberConfig(t)
	cmd, out := startUp(t, dataDir, "--config", config, "--node-id", "u1", "--nats-listen", natsAddr,
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	testutil.Eventually(t, 30*time.Second, "narun up waiting for JetStream", func() bool {
		return strings.Contains(out.String(), "waiting for JetStream to answer")
	})
	for i := 1; i < 3; i++ {
		natstest.StartConfig(t, embednats.Config{
			Listen:     "127.0.0.1:-1",
			ServerName: fmt.Sprintf("u%d", i+1),
			Cluster:    embednats.Cluster{Name: "narun", Listen: clusterAddrs[i], Routes: routes},
		})
	}
	testutil.Eventually(t, 90*time.Second, "narun up serving once the cluster has a leader", func() bool {
		return healthz(runnerAdmin)
	})
	if _, err := signing.LoadKey(filepath.Join(dataDir, signing.NodeKeyFile)); err != nil {
		t.Errorf("node key: %v\n%s", err, out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// While narun up waits for JetStream at the first start of a cluster, it
// asks a service manager for more time: systemd would otherwise kill the
// wait at TimeoutStartSec, start it again and kill it again until the other
// members are up. A SIGHUP then (a log rotation's kill -HUP, an operator
// reloading every node) leaves it waiting: it ended the process, whose
// reload handler is only installed once it serves.
func TestUpWaitingForJetStream(t *testing.T) {
	t.Parallel()
	config, _, _ := firstMemberConfig(t)
	sock := filepath.Join(t.TempDir(), "notify")
	notify, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: sock, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notify.Close()
	cmd, out := startUpEnv(t, t.TempDir(), []string{"NOTIFY_SOCKET=" + sock}, "--config", config, "--node-id", "u1",
		"--nats-listen", testutil.FreeAddr(t), "--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 30*time.Second, "narun up waiting for JetStream", func() bool {
		return strings.Contains(out.String(), "waiting for JetStream to answer")
	})
	if err := notify.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	for {
		n, err := notify.Read(buf)
		if err != nil {
			t.Fatalf("no EXTEND_TIMEOUT_USEC while waiting for JetStream (%v); output:\n%s", err, out.String())
		}
		said := string(buf[:n])
		if said == "READY=1" {
			t.Fatalf("READY=1 before JetStream answered; output:\n%s", out.String())
		}
		if usec, ok := strings.CutPrefix(said, "EXTEND_TIMEOUT_USEC="); ok {
			if d, err := time.ParseDuration(usec + "us"); err != nil || d < 20*time.Second {
				t.Fatalf("asked for %s µs more (%v), want more than the time to its next ask", usec, err)
			}
			break
		}
	}
	if err := cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// Members installed from one copied narun.toml share its [nats]
// server_name; JetStream then never elects a leader, though every route
// connects, and nats-server says so only on the duplicated members, among
// dozens of other lines. The member waiting for JetStream names the
// duplicate itself, with the addresses it came from.
func TestUpNamesDuplicateServerName(t *testing.T) {
	t.Parallel()
	config := u2BesideSharedU1(t)
	cmd, out := startUp(t, t.TempDir(), "--config", config, "--node-id", "u2", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 30*time.Second, "narun up waiting for JetStream", func() bool {
		return strings.Contains(out.String(), "waiting for JetStream to answer")
	})
	waitNamedU1(t, out)
	stopUp(t, cmd, out, 20*time.Second)
}

// firstMemberConfig writes the configuration of the first member, u1, of
// a three-member cluster whose other two members are not started, and
// returns it with the members' route addresses and URLs.
func firstMemberConfig(t *testing.T) (config string, clusterAddrs, routes []string) {
	t.Helper()
	clusterAddrs = []string{testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)}
	for _, a := range clusterAddrs {
		routes = append(routes, "nats-route://"+a)
	}
	return writeMember(t, "u1", clusterAddrs[0], routes), clusterAddrs, routes
}

// writeMember writes the configuration of the cluster member name, whose
// routes listen on listen, and returns its path.
func writeMember(t *testing.T, name, listen string, routes []string) string {
	t.Helper()
	config := filepath.Join(t.TempDir(), "narun.toml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`[nats]
server_name = %q
[nats.cluster]
name = "narun"
listen = %q
routes = ["%s"]
`, name, listen, strings.Join(routes, `", "`))), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return config
}

// A member with trusted_keys, as docs/CLUSTER.md has every member set,
// names a shared [nats] server_name too: it has no node key to sign the
// stored specs with, so it never waits for JetStream, and only a look at
// its routes for as long as it runs finds the duplicate.
func TestUpNamesDuplicateServerNameWithTrustedKeys(t *testing.T) {
	t.Parallel()
	config := u2BesideSharedU1(t)
	trustAKey(t, config)
	cmd, out := startUp(t, t.TempDir(), "--config", config, "--node-id", "u2", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	waitNamedU1(t, out)
	stopUp(t, cmd, out, 20*time.Second)
}

// trustAKey adds to the member configuration at config a fresh key as
// the trusted_keys of [runner] and [gateway], as docs/CLUSTER.md has
// every member set.
func trustAKey(t *testing.T, config string) {
	t.Helper()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	member, err := os.ReadFile(config)
	if err != nil {
		t.Fatal(err)
	}
	trust := fmt.Sprintf("[runner]\ntrusted_keys = [%q]\n[gateway]\ntrusted_keys = [%q]\n", key.Public(), key.Public())
	if err := os.WriteFile(config, append(member, trust...), 0o600); err != nil {
		t.Fatal(err)
	}
}

// u2BesideSharedU1 starts two cluster members that share the server_name
// u1 and writes the configuration of a third, u2, routed to both; it
// returns its path.
func u2BesideSharedU1(t *testing.T) string {
	t.Helper()
	_, clusterAddrs, routes := firstMemberConfig(t)
	for _, i := range []int{0, 2} {
		natstest.StartConfig(t, embednats.Config{
			Listen:     "127.0.0.1:-1",
			ServerName: "u1",
			Cluster:    embednats.Cluster{Name: "narun", Listen: clusterAddrs[i], Routes: routes},
		})
	}
	return writeMember(t, "u2", clusterAddrs[1], routes)
}

// waitNamedU1 waits for narun up's output out to name the server_name u1
// that two members share.
func waitNamedU1(t *testing.T, out fmt.Stringer) {
	t.Helper()
	testutil.Eventually(t, 30*time.Second, "the duplicate server_name u1 named", func() bool {
		s := out.String()
		return strings.Contains(s, "give each member its own [nats] server_name") && strings.Contains(s, `server_name=u1`)
	})
}

// A member's cluster port is, like a hub's leaf port, an address the
// operator needs (for the other members' routes, for a firewall, and it
// is as powerful as the client port): the banner names it with the rest.
func TestUpBannerNamesClusterPort(t *testing.T) {
	t.Parallel()
	config, clusterAddrs, _ := firstMemberConfig(t)
	// With trusted_keys narun up serves without waiting for the other
	// members, which this test never starts.
	trustAKey(t, config)
	cmd, out := startUp(t, t.TempDir(), "--config", config, "--node-id", "u1", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	testutil.Eventually(t, 30*time.Second, "the banner", func() bool { return strings.Contains(out.String(), "  runner   admin") })
	if want := "  cluster  " + clusterAddrs[0] + " (routes of cluster narun join here)\n"; !strings.Contains(out.String(), want) {
		t.Errorf("startup output lacks %q:\n%s", want, out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}
