package runner

import (
	"strings"
	"testing"

	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// addThirdParty registers a NATS Micro service as a program not built on
// narun's consumer package does: without narun_instance metadata.
func addThirdParty(t *testing.T, c *cluster, name string) {
	t.Helper()
	nc := natstest.Connect(t, c.srv)
	svc, err := micro.AddService(nc, micro.Config{
		Name:     name,
		Version:  "1.0.0",
		Endpoint: &micro.EndpointConfig{Subject: name + ".echo", Handler: micro.HandlerFunc(func(r micro.Request) { _ = r.Respond(r.Data()) })},
	})
	if err != nil {
		t.Fatalf("add service %s: %v", name, err)
	}
	t.Cleanup(func() { _ = svc.Stop() })
}

// A new replica of a service that does not name its instance is not
// vouched for by a replica that answered already: its check passes only
// once a responder appears that was not there when it started.
func TestMicroCheckNotPassedByAnotherReplica(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	addThirdParty(t, c, "thirdparty")
	tr := startRunner(t, c, nil)
	c.deploy(t, "thirdparty", "1.0.0", probeBin, "args = [\"listen\", \""+testutil.FreeAddr(t)+"\"]\n[health]\ntype = \"micro\"\nservice = \"thirdparty\"\nstart_grace = \"1m\"\n")
	l := tr.wait(t, "thirdparty", "a first check", func(l []state.Instance) bool {
		return len(l) == 1 && (l[0].State == state.Healthy || strings.Contains(l[0].Reason, "waiting for health check"))
	})
	if l[0].State == state.Healthy {
		t.Fatalf("instance healthy on the answer of a replica that ran before it; its own process never answered: %+v", l[0])
	}
	// The instance's own responder, as its process would register it.
	addThirdParty(t, c, "thirdparty")
	tr.wait(t, "thirdparty", "healthy", allIn(1, state.Healthy))
}
