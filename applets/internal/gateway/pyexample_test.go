package gateway

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestPythonResponderOfTheDocs runs docs/PROTOCOL.md's responder in Python
// with the standard library alone, as printed there (its server address
// aside), behind the gateway: a small body and one larger than a NATS
// message, which it pulls (§2). A change of the protocol that breaks what
// the document tells other languages to do fails here.
func TestPythonResponderOfTheDocs(t *testing.T) {
	t.Parallel()
	python := testutil.Tool(t, "python3")
	doc, err := os.ReadFile("../../../docs/PROTOCOL.md")
	if err != nil {
		t.Fatal(err)
	}
	_, after, ok := bytes.Cut(doc, []byte("The same in Python with the standard library alone"))
	_, code, ok2 := bytes.Cut(after, []byte("```python\n"))
	code, _, ok3 := bytes.Cut(code, []byte("```\n"))
	if !ok || !ok2 || !ok3 {
		t.Fatal("docs/PROTOCOL.md has no Python block after \"The same in Python with the standard library alone\"")
	}
	e := newEnv(t, gwConfig(config.Route{Path: "/hello/", Service: "hello", Timeout: config.Duration(10 * time.Second)}))
	u, err := url.Parse(e.srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	const addr = `("127.0.0.1", 4222)`
	if bytes.Count(code, []byte(addr)) != 1 {
		t.Fatalf("the Python responder no longer connects to %s once: the test cannot point it at its server", addr)
	}
	code = bytes.Replace(code, []byte(addr), fmt.Appendf(nil, "(%q, %s)", u.Hostname(), u.Port()), 1)
	script := filepath.Join(t.TempDir(), "responder.py")
	if err := os.WriteFile(script, code, 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(python, "-u", script)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("responder's stderr:\n%s", stderr.String())
		}
	})
	serving := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		serving <- line
	}()
	select {
	case line := <-serving:
		if line != "serving hello\n" {
			t.Fatalf("the responder printed %q, want \"serving hello\"", line)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the responder did not say it serves hello within 20 s")
	}

	for _, size := range []int{3, 3 << 20} {
		resp, err := http.Post(e.hs.URL+"/hello/x", "application/octet-stream", strings.NewReader(strings.Repeat("a", size)))
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if want := fmt.Sprintf("POST /hello/x: %d bytes\n", size); resp.StatusCode != http.StatusOK || string(body) != want {
			t.Errorf("a body of %d bytes: %d %q, want 200 %q", size, resp.StatusCode, body, want)
		}
	}
}
