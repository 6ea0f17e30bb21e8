package applets_test

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// Two of narun's own listeners on one address would fail the start, after
// the rest was up, in words that named neither: --check refuses them, as
// the start does, naming both. A wildcard host takes the port on every
// address, so it collides with any host on the same port.
func TestJourneyCheckRefusesOwnListenersOnOneAddress(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	a := testutil.FreeAddr(t)
	_, port, _ := strings.Cut(a, ":")
	file := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(file, []byte("[nats]\nlisten = \"0.0.0.0:"+port+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"up flags", []string{"up", "--config", "/dev/null", "--nats-listen", a, "--listen", a, "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", ""},
			[]string{"--nats-listen", "--listen"}},
		{"up file wildcard and flag", []string{"up", "--config", file, "--runner-admin-listen", a, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"},
			[]string{file + `:2: key "nats.listen"`, "--runner-admin-listen"}},
		{"up default", []string{"up", "--config", "/dev/null", "--nats-listen", "127.0.0.1:8080", "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", ""},
			[]string{"--nats-listen", `key "gateway.listen" ":8080"`}},
		{"gw", []string{"gw", "--config", "/dev/null", "--listen", a, "--admin-listen", a}, []string{"--listen", "--admin-listen"}},
		{"nats", []string{"nats", "--config", "/dev/null", "--listen", a, "--http-listen", a}, []string{"--listen", "--http-listen"}},
	} {
		for _, check := range []bool{true, false} {
			if !check && tc.name == "up default" {
				// A start that let the pair through would bind :8080, a
				// port tests must leave alone.
				continue
			}
			argv := append([]string{"narun"}, tc.args...)
			if tc.args[0] != "gw" {
				argv = append(argv, "--data-dir", data)
			}
			if check {
				argv = append(argv, "--check")
			}
			t.Run(tc.name+map[bool]string{true: "/check", false: "/start"}[check], func(t *testing.T) {
				code, stdout, stderr := run(argv...)
				if code != 1 || !strings.Contains(stderr, "same address") {
					t.Fatalf("exit %d, stdout %q, stderr %q; want 1 naming %q", code, stdout, stderr, tc.want)
				}
				for _, w := range tc.want {
					if !strings.Contains(stderr, w) {
						t.Errorf("stderr %q does not name %s", stderr, w)
					}
				}
			})
		}
	}
}

// A listener whose address another process holds fails the start naming
// the flag that set it, as a NATS address in use names its key, and
// narun up prints its addresses only once they are all bound. narun up
// finds it before it starts its NATS server: a new member of a cluster
// that failed so had already joined it, its peers logging its routes
// come and go.
func TestStartNamesTheListenerInUse(t *testing.T) {
	held := heldAddr(t)
	for _, tc := range []struct {
		name, want string
		args       []string
	}{
		{"up gateway", "--listen " + held, []string{"up", "--node-id", "n1", "--nats-listen", testutil.FreeAddr(t), "--listen", held, "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", ""}},
		{"up runner admin", "--runner-admin-listen " + held, []string{"up", "--node-id", "n1", "--nats-listen", testutil.FreeAddr(t), "--listen", "", "--admin-listen", "", "--runner-admin-listen", held}},
		{"gw", "--admin-listen " + held, []string{"gw", "--nats-url", "nats://" + testutil.FreeAddr(t), "--listen", "127.0.0.1:0", "--admin-listen", held}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			argv := append(append([]string{"narun"}, tc.args...), "--config", "/dev/null")
			data := filepath.Join(t.TempDir(), "data")
			if tc.args[0] != "gw" {
				argv = append(argv, "--data-dir", data)
			}
			code, stdout, stderr := run(argv...)
			if code != 1 || !strings.Contains(stderr, tc.want) || !strings.Contains(stderr, "address already in use") {
				t.Fatalf("exit %d, stderr %q; want 1 naming %q", code, stderr, tc.want)
			}
			if strings.Contains(stdout, "narun up: data in") {
				t.Errorf("narun up printed its addresses before binding them: %q", stdout)
			}
			if _, err := os.Stat(filepath.Join(data, "jetstream")); err == nil {
				t.Errorf("narun up started its NATS server before it found %s in use", held)
			}
		})
	}
}

// narun up on the data dir of a narun runner that runs (both default to
// /var/lib/narun as root) refuses before it starts its NATS server, makes
// its node key there or prints its addresses: it failed once its runner
// started, having announced a node that never served and left a
// JetStream store and a signing.key that ctl on the device then signed
// with, in the runner's data dir.
func TestUpRefusesTheDataDirOfARunningRunner(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	lock, err := os.OpenFile(filepath.Join(data, "runner.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { lock.Close() })
	// As the runner holds it while it runs.
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		t.Fatal(err)
	}
	code, stdout, stderr := run("narun", "up", "--config", "/dev/null", "--data-dir", data, "--node-id", "n1",
		"--nats-listen", testutil.FreeAddr(t), "--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
	if code != 1 || !strings.Contains(stderr, "in use by another runner") {
		t.Fatalf("exit %d, stdout %q, stderr %q; want 1 saying the data dir is in use by another runner", code, stdout, stderr)
	}
	if strings.Contains(stdout, "narun up: data in") {
		t.Errorf("narun up announced its addresses before it found the data dir in use: %q", stdout)
	}
	for _, name := range []string{"jetstream", "signing.key"} {
		if _, err := os.Stat(filepath.Join(data, name)); err == nil {
			t.Errorf("narun up made %s in the data dir of another runner", name)
		}
	}
}

// A data dir a start could not make fails --check too, also for root,
// whom access(2) lets write anywhere: a pseudo file system such as /proc
// takes no directories.
func TestCheckRefusesADataDirOnAPseudoFileSystem(t *testing.T) {
	data := "/proc/narun-test/data"
	code, _, stderr := run("narun", "up", "--config", "/dev/null", "--data-dir", data, "--nats-listen", "127.0.0.1:0",
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", "", "--node-id", "n1")
	if code != 1 || !strings.Contains(stderr, data) {
		t.Fatalf("start: exit %d, %q; want it to fail naming %s", code, stderr, data)
	}
	for _, applet := range []string{"up", "nats", "runner"} {
		code, stdout, stderr := run("narun", applet, "--config", "/dev/null", "--data-dir", data, "--node-id", "n1", "--check")
		if applet == "nats" {
			code, stdout, stderr = run("narun", applet, "--config", "/dev/null", "--data-dir", data, "--check")
		}
		if code != 1 || !strings.Contains(stderr, "/proc") {
			t.Errorf("%s --check: exit %d, %q%q; want 1 naming /proc", applet, code, stdout, stderr)
		}
	}
}

// A data dir below a directory another user may write, or owns, is
// refused by a start and by --check: that user could rename the data dir
// while narun runs and put one of their own in its place, whose binaries
// and signing.key narun would then use. A sticky directory owned by root
// (/tmp) lets no one rename what is not theirs, and passes.
func TestDataDirUnderADirectoryOthersMayWriteIsRefused(t *testing.T) {
	dir := t.TempDir()
	mkdir := func(name string, mode os.FileMode, uid int) string {
		p := filepath.Join(dir, name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		if uid >= 0 {
			if err := os.Chown(p, uid, uid); err != nil {
				t.Fatal(err)
			}
		}
		return p
	}
	open := mkdir("open", 0o777, -1)
	type tc struct {
		name, data, want string
		code             int
	}
	cases := []tc{
		{"others may write the parent", filepath.Join(open, "data"), open + " is writable by its group or others", 1},
		{"sticky parent", filepath.Join(mkdir("sticky", 0o777|os.ModeSticky, -1), "data"), "configuration valid", 0},
	}
	if os.Geteuid() == 0 {
		foreign := mkdir("foreign", 0o755, 65534)
		cases = append(cases, tc{"another user owns the parent", filepath.Join(foreign, "data"), foreign + " belongs to uid 65534", 1},
			tc{"another user's directory in a sticky one", filepath.Join(mkdir("tmp", 0o777|os.ModeSticky, -1), "theirs", "data"), "belongs to uid 65534", 1})
		if err := os.Mkdir(filepath.Join(dir, "tmp", "theirs"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(filepath.Join(dir, "tmp", "theirs"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range cases {
		for _, check := range []bool{true, false} {
			if !check && c.code == 0 {
				continue
			}
			t.Run(c.name+map[bool]string{true: "/check", false: "/start"}[check], func(t *testing.T) {
				argv := []string{"narun", "nats", "--config", "/dev/null", "--data-dir", c.data, "--listen", heldAddr(t)}
				if check {
					argv = append(argv, "--check")
				}
				code, stdout, stderr := run(argv...)
				if code != c.code || !strings.Contains(stdout+stderr, c.want) {
					t.Errorf("exit %d, %q%q; want %d saying %q", code, stdout, stderr, c.code, c.want)
				}
				if _, err := os.Stat(c.data); err == nil && c.code != 0 {
					t.Errorf("narun made the data dir %s it refused", c.data)
				}
			})
		}
	}
}

// narun up warns of a data dir under /tmp, where the runner cannot start
// an app whose sandbox has the tmp preset.
func TestUpWarnsOfADataDirUnderTmp(t *testing.T) {
	dir, err := os.MkdirTemp("/tmp", "narun-test-")
	if err != nil {
		t.Skip("no /tmp:", err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	code, stdout, stderr := run("narun", "up", "--config", "/dev/null", "--data-dir", filepath.Join(dir, "data"), "--node-id", "n1", "--check")
	if code != 0 || !strings.Contains(stderr, "under /tmp") {
		t.Fatalf("exit %d, %q%q; want 0 with a warning of the data dir under /tmp", code, stdout, stderr)
	}
}

// narun up and narun runner warn of a directory above the data dir that
// others cannot search: a sandboxed app, under a uid of its own, cannot
// reach its instance dir there, and each of its instances fails.
func TestWarnsOfADataDirOthersCannotReach(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("only root starts sandboxes, and only root is warned")
	}
	parent := filepath.Join(t.TempDir(), "private")
	if err := os.Mkdir(parent, 0o700); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(parent, "data")
	for _, applet := range []string{"up", "runner"} {
		t.Run(applet, func(t *testing.T) {
			code, stdout, stderr := run("narun", applet, "--config", "/dev/null", "--data-dir", data, "--node-id", "n1", "--check")
			if code != 0 || !strings.Contains(stderr, "not searchable by others") || !strings.Contains(stderr, parent) {
				t.Fatalf("exit %d, %q%q; want 0 with a warning naming %s", code, stdout, stderr, parent)
			}
		})
	}
}

// A --check warns of a secret key file that cannot be used, as the start
// it stands for does: the start goes on, apps with secrets waiting, so the
// check passes, but it is what a check before a restart is for.
func TestCheckWarnsOfAnUnusableKeyFile(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "secret.key")
	conf := filepath.Join(dir, "narun.toml")
	if err := os.WriteFile(conf, []byte("[runner]\nmaster_key_file = \""+missing+"\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"up", "--config", conf},
		{"runner", "--config", "/dev/null", "--key-file", missing},
	} {
		t.Run(args[0], func(t *testing.T) {
			code, stdout, stderr := run(append(append([]string{"narun"}, args...), "--data-dir", filepath.Join(t.TempDir(), "data"), "--node-id", "n1", "--check")...)
			if code != 0 || !strings.Contains(stderr, "secret key file unreadable") || !strings.Contains(stderr, missing) {
				t.Fatalf("exit %d, %q%q; want 0 with a warning naming %s", code, stdout, stderr, missing)
			}
		})
	}
}

// Install refuses before it makes any link when a file is in the way of
// one, naming each: a half-made install leaves an operator guessing which
// links exist.
func TestInstallIsAllOrNothing(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "narun")
	if err := os.WriteFile(bin, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	other := t.TempDir()
	for _, name := range []string{"narun-gw", "narun-ctl"} {
		if err := os.WriteFile(filepath.Join(other, name), []byte("precious"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	created, err := applets.Install(bin, other)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(other, "narun-gw")) || !strings.Contains(err.Error(), filepath.Join(other, "narun-ctl")) {
		t.Fatalf("install over two files: err = %v; want both named", err)
	}
	entries, _ := os.ReadDir(other)
	if len(created) != 0 || len(entries) != 2 {
		t.Errorf("install made %v, directory holds %d entries; want nothing made", created, len(entries))
	}

	missing := filepath.Join(other, "missing")
	if _, err := applets.Install(bin, missing); err == nil || !strings.Contains(err.Error(), fmt.Sprintf("directory %q does not exist", missing)) {
		t.Errorf("install into a missing directory: err = %v; want it named as missing", err)
	}
}

// A link named after no applet, run without arguments, says so before
// the usage, as an unknown applet given as argument does.
func TestUnknownLinkNameIsNamed(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	foo := filepath.Join(t.TempDir(), "foo")
	if err := os.Symlink(self, foo); err != nil {
		t.Fatal(err)
	}
	code, out := runLinked(t, foo)
	if code != 2 || !strings.Contains(out, `unknown applet "foo"`) || !strings.Contains(out, "applets:") {
		t.Fatalf("exit %d, %q; want 2 naming foo before the usage", code, out)
	}
}

// narun up takes the runner's --label and --key-file, with their meaning:
// labels differ from one device to the next, and a narun.toml only for
// them was the one way to give up its labels. What reaches the node is
// what its heartbeat says, as node list --json reads it: the label, and
// the ids of the keys in that key file.
func TestUpTakesTheRunnersNodeFlags(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "secret.key")
	keyFile := filepath.Join(t.TempDir(), "secret.key")
	key, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := secrets.ParseRing([]byte(key + "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, []byte(key+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, applet := range []string{"up", "runner"} {
		t.Run(applet, func(t *testing.T) {
			dataDir := filepath.Join(t.TempDir(), "data")
			base := []string{"narun", applet, "--config", "/dev/null", "--data-dir", dataDir, "--node-id", "n1"}
			code, stdout, stderr := run(append(base, "--check", "--label", "role=edge", "--key-file", missing)...)
			if code != 0 || !strings.Contains(stderr, "secret key file unreadable") || !strings.Contains(stderr, missing) {
				t.Errorf("--check --label role=edge --key-file %s: exit %d, %q%q; want 0 with a warning naming the key file", missing, code, stdout, stderr)
			}
			code, stdout, stderr = run(append(base, "--check", "--label", "role")...)
			if code != 2 || !strings.Contains(stderr, `label "role": want key=value`) {
				t.Errorf("--label role: exit %d, %q%q; want 2 saying it wants key=value", code, stdout, stderr)
			}

			var natsURL string
			args := append(base[1:], "--label", "role=edge", "--key-file", keyFile)
			if applet == "up" {
				natsURL = "nats://" + testutil.FreeAddr(t)
				args = append(args, "--nats-listen", strings.TrimPrefix(natsURL, "nats://"), "--listen", "", "--admin-listen", "", "--runner-admin-listen", "")
			} else {
				natsURL = natstest.Start(t).ClientURL()
				args = append(args, "--nats-url", natsURL, "--admin-listen", "")
			}
			var out testutil.LogBuffer
			cmd := exec.Command(os.Args[0], args...)
			cmd.Env = append(os.Environ(), asNarun+"=1")
			cmd.Stdout, cmd.Stderr = &out, &out
			cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
			startChild(t, cmd)
			t.Cleanup(func() { _ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })

			var node struct {
				ID         string            `json:"id"`
				Labels     map[string]string `json:"labels"`
				SecretKeys *struct {
					File bool     `json:"file"`
					IDs  []string `json:"ids"`
				} `json:"secret_keys"`
			}
			ctlData := t.TempDir()
			testutil.Eventually(t, 30*time.Second, "the heartbeat of n1", func() bool {
				code, stdout, _ := run("narun", "ctl", "--config", "/dev/null", "--data-dir", ctlData, "--nats-url", natsURL, "node", "list", "--json")
				if code != 0 {
					return false
				}
				var nodes []json.RawMessage
				if err := json.Unmarshal([]byte(stdout), &nodes); err != nil || len(nodes) == 0 {
					return false
				}
				return json.Unmarshal(nodes[0], &node) == nil && node.ID == "n1"
			})
			if node.Labels["role"] != "edge" {
				t.Errorf("heartbeat labels %v, want role=edge\n%s", node.Labels, out.String())
			}
			if node.SecretKeys == nil || !node.SecretKeys.File || !slices.Equal(node.SecretKeys.IDs, []string{ring.PrimaryID()}) {
				t.Errorf("heartbeat secret_keys %+v, want the key %s of %s\n%s", node.SecretKeys, ring.PrimaryID(), keyFile, out.String())
			}
		})
	}
}
