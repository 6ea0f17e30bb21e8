package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/embednats/natstest"
)

// clientTLS is what a client of a cluster that requires TLS presents:
// the CA of the servers' certificates and a certificate of its own.
type clientTLS struct{ ca, cert, key string }

// tlsClients holds, by NATS URL list, the files of a cluster whose client
// port requires TLS, for ctl and the test's own connections to it.
var tlsClients sync.Map

func ctlTLSFlags(natsURL string) []string {
	c, ok := tlsClients.Load(natsURL)
	if !ok {
		return nil
	}
	f := c.(clientTLS)
	return []string{"--nats-ca", f.ca, "--nats-cert", f.cert, "--nats-key", f.key}
}

func natsTLSOptions(natsURL string) []nats.Option {
	c, ok := tlsClients.Load(natsURL)
	if !ok {
		return nil
	}
	f := c.(clientTLS)
	return []nats.Option{nats.RootCAs(f.ca), nats.ClientCert(f.cert, f.key)}
}

// TestTLSCluster is docs/CLUSTER.md's "TLS": three devices each running
// narun up, with routes over TLS checked both ways and a client port that
// requires TLS and verifies clients. ctl deploys with its certificate,
// the apps connect with the files the runner gives them, and every
// gateway serves hello.
func TestTLSCluster(t *testing.T) {
	t.Parallel()
	n := NewNet(t, "s1", "s2", "s3")
	// Two CAs, as docs/CLUSTER.md says: the apps' certificate must not
	// pass as a route's.
	ca, routeCA := natstest.NewCA(t), natstest.NewCA(t)
	o := &ops{edge: &edge{net: n, members: n.hosts, urls: clusterURLs(n.hosts)}}
	pub := operatorKey(t, o.urls)
	ctlCert, ctlKey := ca.Issue(t, "ctl")
	tlsClients.Store(o.urls, clientTLS{ca: ca.File, cert: ctlCert, key: ctlKey})
	t.Cleanup(func() { tlsClients.Delete(o.urls) })
	appCert, appKey := ca.Issue(t, "apps")
	for _, h := range n.hosts {
		cert, certKey := ca.Issue(t, h.Name, h.Addr, "127.0.0.1")
		routeCert, routeKey := routeCA.Issue(t, h.Name+"-route", h.Addr)
		h.WriteFile("narun.toml", natsSection(h, n.hosts)+
			fmt.Sprintf("[nats.cluster.tls]\ncert = %q\nkey = %q\nca = %q\n", routeCert, routeKey, routeCA.File)+
			fmt.Sprintf("[nats.tls]\ncert = %q\nkey = %q\nca = %q\nverify = true\n", cert, certKey, ca.File)+
			fmt.Sprintf(`[gateway]
listen = "0.0.0.0:8080"
admin_listen = "0.0.0.0:9090"
trusted_keys = [%q]
[runner]
node_id = %q
admin_listen = "0.0.0.0:9101"
heartbeat_interval = "1s"
trusted_keys = [%q]
app_nats_ca = %q
app_nats_cert = %q
app_nats_key = %q
`, pub, h.Name, pub, ca.File, appCert, appKey))
		h.Start("up", "up", "--config", h.DataDir+"/narun.toml")
	}
	for _, h := range n.hosts {
		waitJetStream(t, h, 60*time.Second)
	}

	// ctl without the client files is refused; the runner's heartbeats
	// cross the routes.
	if r, err := runCtl(narunBinary(t), "nats://"+n.hosts[0].Addr+":4222", "", "node", "ls"); err != nil || r.Code == 0 || !strings.Contains(r.Out, "certificate") {
		t.Fatalf("ctl without the CA: %v, exit %d, want a failure naming the certificate:\n%s", err, r.Code, r.Out)
	}
	o.deployHello(t, []string{"s1", "s2", "s3"})
}
