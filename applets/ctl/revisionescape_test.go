package ctl

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
)

// openPTY opens a pseudo-terminal: the side a program writes to, and
// the side that reads what it wrote.
func openPTY(t *testing.T) (tty, master *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { m.Close() })
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Skipf("unlock pseudo-terminal: %v", err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Skipf("pseudo-terminal number: %v", err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("open pseudo-terminal: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s, m
}

// app history --revision prints a stored spec, which any NATS client that
// may write narun-apps wrote, an app included: on a terminal its escape
// sequences were printed raw, and acted on (here, setting the window
// title), as logs and tables never let them. Into a file or pipe it stays
// byte for byte, to deploy as it is.
func TestHistoryRevisionEscapedOnATerminal(t *testing.T) {
	// Not parallel: Main runs in this process, and urfave/cli writes
	// package variables as it parses.
	h := newHarness(t)
	const esc = "\x1b]0;owned\x07\u202e"
	spec := "name = \"evil\"\nversion = \"1\"\nnodes = [\"n1\"]\n# " + esc + "\n"
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "evil", []byte(spec)); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "app", "history", "evil", "--revision", "1")
	if r.out != spec {
		t.Errorf("into a pipe: %q, want the spec byte for byte %q", r.out, spec)
	}

	tty, master := openPTY(t)
	stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: tty, Stderr: io.Discard, Getenv: func(string) string { return "" }}
	if err := Main(context.Background(), stdio, []string{"ctl", "--config", h.config, "--nats-url", h.url, "app", "history", "evil", "--revision", "1"}); err != nil {
		t.Fatal(err)
	}
	tty.Close()
	var out bytes.Buffer
	buf := make([]byte, 4096)
	for {
		n, err := master.Read(buf)
		out.Write(buf[:n])
		if err != nil {
			break
		}
	}
	got := strings.ReplaceAll(out.String(), "\r\n", "\n")
	if strings.ContainsAny(got, "\x1b\x07\u202e") || !strings.Contains(got, `# \x1b]0;owned\x07\u202e`) || !strings.HasPrefix(got, "name = \"evil\"\nversion") {
		t.Errorf("on a terminal: %q, want its escape sequence shown escaped, lines kept", got)
	}
}
