package cli

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
)

// A parent directory its group may write is unsafe whatever the group:
// its members could swap the data dir, root's group included (membership
// in gid 0 gives no write to root's files, and OpenShift runs arbitrary
// uids in it). The refusal names the group, says why, offers another place
// first, and shows the mode with its setgid bit, as Debian's /var/local
// (2775 root:staff) has it.
func TestSafeAncestorsGroupWritableParent(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a directory to another group needs root")
	}
	cases := []struct {
		name string
		gid  int
		mode os.FileMode
		want []string // substrings of the error; none means accepted
	}{
		{"root's group may write", 0, 0o775 | os.ModeSetgid, []string{"(gid 0) may write", "mode 2775"}},
		{"another group may write", 50, 0o775 | os.ModeSetgid, []string{"(gid 50) may write", "mode 2775", "/var/lib/narun", "chmod g-w"}},
		{"others may write", 0, 0o777, []string{"writable by its group or others", "mode 0777"}},
		{"another group, sticky", 50, 0o775 | os.ModeSticky, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			parent := filepath.Join(t.TempDir(), "local")
			if err := os.Mkdir(parent, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chown(parent, 0, c.gid); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(parent, c.mode); err != nil {
				t.Fatal(err)
			}
			err := safeAncestors(filepath.Join(parent, "narun"))
			if c.want == nil {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatal("accepted")
			}
			t.Log(err)
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// A --check answers for the data dir without making it; a start makes it
// for this user only.
func TestDataDir(t *testing.T) {
	cases := []struct {
		name      string
		checkOnly bool
		made      bool
	}{
		{"check", true, false},
		{"start", false, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "narun")
			if err := DataDir(c.checkOnly, config.File{DataDir: dir}); err != nil {
				t.Fatal(err)
			}
			fi, err := os.Stat(dir)
			if made := err == nil; made != c.made {
				t.Fatalf("data dir made: %v, want %v (%v)", made, c.made, err)
			}
			if c.made && fi.Mode().Perm() != 0o700 {
				t.Errorf("data dir mode %04o, want 0700", fi.Mode().Perm())
			}
		})
	}
}

// The directories a start makes above the data dir are searchable by
// others, not writable: a sandboxed app runs under a uid of its own and
// must pass them to reach its instance dir, and the runner refuses to
// start it below a parent that others cannot search. A umask that takes
// others' search bit (027, common on hardened hosts) must not make them
// 0750, as MkdirAll's 0700 did before. Not parallel: the umask is the
// process's.
func TestDataDirParentsSearchable(t *testing.T) {
	for _, umask := range []int{0o022, 0o027} {
		old := syscall.Umask(umask)
		base := t.TempDir()
		if err := os.Chmod(base, 0o755); err != nil {
			t.Fatal(err)
		}
		dir := filepath.Join(base, "srv", "narun", "data")
		err := DataDir(false, config.File{DataDir: dir})
		syscall.Umask(old)
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{filepath.Join(base, "srv"), filepath.Join(base, "srv", "narun")} {
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if m := fi.Mode().Perm(); m != 0o755 {
				t.Errorf("%s made with mode %04o under umask %03o, want 0755", p, m, umask)
			}
		}
		fi, err := os.Stat(dir)
		if err != nil {
			t.Fatal(err)
		}
		if m := fi.Mode().Perm(); m != 0o700 {
			t.Errorf("data dir mode %04o under umask %03o, want 0700", m, umask)
		}
	}
}

// A TLS handshake that times out (a slow link, a stuck server) is no
// refusal of the client's certificate: the hint about one would send the
// operator the wrong way.
func TestCertRefusedIsNotATimeout(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		// Asks for TLS, then says nothing more.
		fmt.Fprintf(c, "INFO {\"server_id\":\"x\",\"tls_required\":true}\r\n")
		io.Copy(io.Discard, c)
	}()
	_, err = nats.Connect("nats://"+l.Addr().String(), nats.Timeout(200*time.Millisecond))
	if err == nil || !errors.Is(err, nats.ErrTLS) {
		t.Fatalf("connect: %v, want a TLS error", err)
	}
	if CertRefused(err) {
		t.Errorf("CertRefused(%v) = true for a handshake that timed out", err)
	}
}
