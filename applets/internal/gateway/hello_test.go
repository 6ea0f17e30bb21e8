package gateway

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestHelloFixture builds testdata/apps/hello and checks the contract of
// shared/CONTRACT.md through the gateway, with the service reading its NATS
// URL from NARUN_NATS_URL as apps deployed by the runner do, and as a plain
// HTTP server.
func TestHelloFixture(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "hello")
	build := exec.Command("go", "build", "-o", bin, "./testdata/apps/hello")
	build.Dir = filepath.Join("..", "..", "..")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build hello: %v\n%s", err, out)
	}
	e := newEnv(t, gwConfig(config.Route{Path: "/hello/", Service: "hello"}))
	httpAddr := testutil.FreeAddr(t)
	var cmds []*exec.Cmd
	for _, args := range [][]string{nil, {"--http", httpAddr}} {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "NARUN_NATS_URL="+e.srv.ClientURL())
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	t.Cleanup(func() {
		for _, c := range cmds {
			_ = c.Process.Signal(os.Interrupt)
			if err := c.Wait(); err != nil {
				t.Errorf("hello %v did not stop cleanly: %v", c.Args, err)
			}
		}
	})
	for _, base := range []string{e.hs.URL, "http://" + httpAddr} {
		testutil.Eventually(t, 15*time.Second, "hello answers at "+base, func() bool {
			resp, err := http.Post(base+"/hello/", "application/json", strings.NewReader(`{"name":"X"}`))
			if err != nil {
				return false
			}
			defer resp.Body.Close()
			var out struct{ Message string }
			return resp.StatusCode == 200 && json.NewDecoder(resp.Body).Decode(&out) == nil && strings.Contains(out.Message, "Hello, X")
		})
		resp, err := http.Post(base+"/hello/echo?q=1", "text/plain", strings.NewReader("12345"))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var echo struct {
			Method, Path, Query string
			BodyLength          int `json:"body_length"`
		}
		if err := json.Unmarshal(b, &echo); err != nil || echo.Method != "POST" || echo.Path != "/hello/echo" || echo.Query != "q=1" || echo.BodyLength != 5 {
			t.Errorf("%s echo = %s (%v)", base, b, err)
		}
	}
}
