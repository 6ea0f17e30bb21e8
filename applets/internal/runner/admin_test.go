package runner

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

// TestAdminPageInBrowser renders the admin page in headless Chromium and
// finds every instance in the table of the rendered DOM.
func TestAdminPageInBrowser(t *testing.T) {
	t.Parallel()
	chromium := testutil.Tool(t, "chromium")
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.deploy(t, "hello", "1.0.0", helloBin, "replicas = 2\n")
	list := tr.wait(t, "hello", "2 healthy", allIn(2, state.Healthy))
	srv := httptest.NewServer(tr.AdminHandler())
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, chromium, "--headless", "--no-sandbox", "--disable-gpu",
		"--user-data-dir="+t.TempDir(), "--dump-dom", srv.URL+"/").Output()
	if err != nil {
		t.Fatalf("chromium: %v", err)
	}
	dom := string(out)
	if !strings.Contains(dom, `<table id="instances">`) {
		t.Fatalf("no instance table in the rendered page:\n%s", dom)
	}
	for _, in := range list {
		row := fmt.Sprintf(`<tr data-app="hello" data-instance="%s" data-state="healthy">`, in.ID)
		if !strings.Contains(dom, row) {
			t.Errorf("rendered page lacks row %s:\n%s", row, dom)
		}
		if !strings.Contains(dom, fmt.Sprintf("<td>%d</td>", in.PID)) {
			t.Errorf("rendered page lacks pid %d", in.PID)
		}
	}
}
