package nats_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/testutil"
	natsapplet "github.com/narun/narun/applets/nats"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

// Members installed from one copied narun.toml share its [nats]
// server_name; JetStream then never elects a leader, though every route
// connects, and nats-server says so only on the duplicated members. A
// narun nats member whose routes show the duplicate names it, with the
// addresses it came from, as narun up does.
func TestNatsNamesDuplicateServerName(t *testing.T) {
	clusterAddrs := []string{testutil.FreeAddr(t), testutil.FreeAddr(t), testutil.FreeAddr(t)}
	var routes []string
	for _, a := range clusterAddrs {
		routes = append(routes, "nats-route://"+a)
	}
	for _, i := range []int{0, 2} {
		natstest.StartConfig(t, embednats.Config{
			Listen:     "127.0.0.1:-1",
			ServerName: "u1",
			Cluster:    embednats.Cluster{Name: "narun", Listen: clusterAddrs[i], Routes: routes},
		})
	}
	config := filepath.Join(t.TempDir(), "narun.toml")
	err := os.WriteFile(config, []byte(fmt.Sprintf(`[nats]
server_name = "u2"
[nats.cluster]
name = "narun"
listen = %q
routes = ["%s"]
`, clusterAddrs[1], strings.Join(routes, `", "`))), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	out := testutil.RunApplet(t, natsapplet.Main, "nats", "--config", config, "--data-dir", t.TempDir(), "--listen", testutil.FreeAddr(t))
	testutil.Eventually(t, 30*time.Second, "narun nats to name the duplicate server_name u1", func() bool {
		s := out.String()
		return strings.Contains(s, "give each member its own [nats] server_name") && strings.Contains(s, "server_name=u1")
	})
}
