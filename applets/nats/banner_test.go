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
	"github.com/narun/narun/embednats/natstest"
)

// With TLS on its client port, narun nats names it with tls:// when it
// is ready, as narun up's banner does: nats:// says plain text.
func TestReadyNamesTLSClientPort(t *testing.T) {
	t.Parallel()
	ca := natstest.NewCA(t)
	cert, key := ca.Issue(t, "server")
	config := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("[nats.tls]\ncert = %q\nkey = %q\n", cert, key)), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	out := testutil.RunApplet(t, natsapplet.Main, "nats", "--config", config, "--data-dir", t.TempDir(), "--listen", addr)
	testutil.Eventually(t, 10*time.Second, "narun nats to be ready", func() bool { return strings.Contains(out.String(), "nats ready") })
	if want := "clients=tls://" + addr + " "; !strings.Contains(out.String(), want) {
		t.Errorf("ready line lacks %q:\n%s", want, out.String())
	}
}
