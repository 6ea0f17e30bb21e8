package gateway

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// grpcResult is one line printed by testdata/apps/grpchealth --call.
type grpcResult struct {
	Call, Code, Message, Status string
}

// TestGRPCThroughGateway serves grpc-go's health service with
// consumer.ListenAndServe and calls it with a grpc-go client over h2c
// through the gateway: unary calls, a status error, a server stream, and
// the gateway's own errors as gRPC statuses.
func TestGRPCThroughGateway(t *testing.T) {
	// The fixture is a module of its own (narun does not depend on gRPC);
	// building it may fetch grpc-go from the module proxy.
	dir := filepath.Join("..", "..", "..", "testdata", "apps", "grpchealth")
	bin := filepath.Join(t.TempDir(), "grpchealth")
	build := exec.Command("go", "build", "-o", bin, ".")
	build.Dir = dir
	build.Env = append(os.Environ(), "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build the gRPC fixture: %v\n%s", err, out)
	}

	e := newEnv(t, gwConfig(config.Route{Path: "/grpc.health.v1.Health/", Service: "grpchealth"}))
	hs := httptest.NewUnstartedServer(e.gw.Handler())
	hs.Config.Protocols = new(http.Protocols)
	hs.Config.Protocols.SetHTTP1(true)
	hs.Config.Protocols.SetUnencryptedHTTP2(true)
	hs.Start()
	t.Cleanup(hs.Close)
	addr := strings.TrimPrefix(hs.URL, "http://")

	call := func() map[string]grpcResult {
		t.Helper()
		out, err := exec.Command(bin, "--call", addr).Output()
		if err != nil {
			t.Fatalf("grpchealth --call: %v\n%s", err, out)
		}
		results := map[string]grpcResult{}
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			var r grpcResult
			if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
				t.Fatalf("decode %q: %v", sc.Text(), err)
			}
			results[r.Call] = r
		}
		return results
	}

	// No instance yet: the gateway answers with gRPC statuses a gRPC
	// client can read, naming the request id, not with an HTTP error page.
	before := call()
	// (grpc-go turns an HTTP error into a status too, but its message then
	// starts "unexpected HTTP status code".)
	if r := before["check narun"]; r.Code != "Unavailable" || !strings.HasPrefix(r.Message, "no instance of service grpchealth is running (request id ") {
		t.Errorf("check without a service: %+v, want Unavailable naming the service and the request id", r)
	}
	if r := before["unrouted"]; r.Code != "Unimplemented" || !strings.HasPrefix(r.Message, "no route for /narun.Missing/Call (request id ") {
		t.Errorf("call without a route: %+v, want Unimplemented naming the path", r)
	}

	srv := exec.Command(bin)
	srv.Env = append(os.Environ(), "NARUN_NATS_URL="+e.srv.ClientURL())
	srv.Stderr = os.Stderr
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = srv.Process.Signal(os.Interrupt)
		if err := srv.Wait(); err != nil {
			t.Errorf("grpchealth did not stop cleanly: %v", err)
		}
	})
	testutil.Eventually(t, 15*time.Second, "grpchealth registered", func() bool {
		_, err := e.nc.Request("$SRV.PING.grpchealth", nil, time.Second)
		return err == nil
	})

	got := call()
	want := map[string]grpcResult{
		"check narun":   {Call: "check narun", Code: "OK", Status: "SERVING"},
		"check unknown": {Call: "check unknown", Code: "NotFound", Message: "unknown service"},
		"watch narun":   {Call: "watch narun", Code: "OK", Status: "SERVING"},
	}
	for name, w := range want {
		if got[name] != w {
			t.Errorf("%s: got %+v, want %+v", name, got[name], w)
		}
	}
}

func TestIsGRPC(t *testing.T) {
	for ct, want := range map[string]bool{
		"application/grpc":               true,
		"application/grpc+proto":         true,
		"application/grpc;charset=utf-8": true,
		"application/grpc-web":           false,
		"application/grpc-web+proto":     false,
		"application/json":               false,
		"":                               false,
	} {
		var h []string
		if ct != "" {
			h = []string{ct}
		}
		if got := isGRPC(h); got != want {
			t.Errorf("isGRPC(%q) = %v, want %v", ct, got, want)
		}
	}
}

func TestGRPCPercentEncode(t *testing.T) {
	for in, want := range map[string]string{
		"no route for /a (request id X)": "no route for /a (request id X)",
		"100% sure":                      "100%25 sure",
		"line\nbreak":                    "line%0Abreak",
		"café":                           "caf%C3%A9",
	} {
		if got := grpcPercentEncode(in); got != want {
			t.Errorf("grpcPercentEncode(%q) = %q, want %q", in, got, want)
		}
	}
}
