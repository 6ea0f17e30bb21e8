package main

import (
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary runs main when this variable is set, so a test can run
// the command itself.
const asHello = "HELLO_TEST_AS_HELLO"

func TestMain(m *testing.M) {
	if os.Getenv(asHello) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHelpNamesTheNATSServerVariable: -help must say how the consumer picks
// its NATS server (NARUN_NATS_URL), which no flag shows.
func TestHelpNamesTheNATSServerVariable(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-help")
	cmd.Env = append(os.Environ(), asHello+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hello -help: %v\n%s", err, out)
	}
	for _, want := range []string{"NARUN_NATS_URL", "nats://127.0.0.1:4222", "NARUN_NATS_CREDS", "NARUN_NATS_NKEY", "NARUN_NATS_CA", "NARUN_NATS_CERT", "NARUN_NATS_TLS_NAME", "-http", "-service"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("help does not mention %s:\n%s", want, out)
		}
	}
}

// The contract's fixture: POST /hello/ with {"name":"X"} greets X, and any
// other request under /hello/, a POST without a name included, echoes
// what it received.
func TestHandlerKeepsTheContract(t *testing.T) {
	big := strings.Repeat("x", 1<<20+10)
	for _, tc := range []struct {
		method, target, body string
		want                 string
	}{
		{"POST", "/hello/", `{"name":"X"}`, `{"message":"Hello, X!"}`},
		{"POST", "/hello/?q=1", "", `{"body_length":0,"method":"POST","path":"/hello/","query":"q=1"}`},
		{"POST", "/hello/", "hello world", `{"body_length":11,"method":"POST","path":"/hello/","query":""}`},
		{"POST", "/hello/", `{"other":1}`, `{"body_length":11,"method":"POST","path":"/hello/","query":""}`},
		{"POST", "/hello/", `{"name":""}`, `{"body_length":11,"method":"POST","path":"/hello/","query":""}`},
		{"POST", "/hello/", big, `{"body_length":1048586,"method":"POST","path":"/hello/","query":""}`},
		{"PUT", "/hello/x?a=b", "abc", `{"body_length":3,"method":"PUT","path":"/hello/x","query":"a=b"}`},
	} {
		req := httptest.NewRequest(tc.method, tc.target, strings.NewReader(tc.body))
		w := httptest.NewRecorder()
		Handler().ServeHTTP(w, req)
		if got := strings.TrimSpace(w.Body.String()); w.Code != http.StatusOK || got != tc.want {
			t.Errorf("%s %s with %.20q: %d %s, want 200 %s", tc.method, tc.target, tc.body, w.Code, got, tc.want)
		}
	}
}
