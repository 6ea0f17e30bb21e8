package ctl

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

// What a heartbeat says reaches ctl's warnings: any NATS client that can
// write narun-nodes writes it, so its id, host and arch were printed as
// they came, escape sequences and all, and could act on the terminal.
func TestHeartbeatFieldsEscaped(t *testing.T) {
	const esc = "\x1b]0;owned\x07\x1b[2J"
	var stderr strings.Builder
	e := &env{stdio: cli.IO{Stdout: io.Discard, Stderr: &stderr}, log: slog.New(slog.DiscardHandler)}
	now := time.Now()
	n := state.Node{
		ID: "edge" + esc, Host: "h" + esc, Arch: "arm64" + esc, Labels: map[string]string{"role": "edge"},
		SignaturesRequired: true, Duplicates: []state.Duplicate{{Host: "d" + esc}},
		Time: now.Add(time.Hour), Stored: now, Interval: time.Second,
	}
	e.warnNodes([]state.Node{n})
	app, err := spec.Parse("edge.toml", []byte("name = \"edge\"\nversion = \"1\"\nlabels = { role = \"edge\" }\n"))
	if err != nil {
		t.Fatal(err)
	}
	e.warnMissingArch([]state.Node{n}, app)
	e.warnSignedOnly([]state.Node{n}, app, nil)
	n.Stored = now.Add(-time.Minute)
	e.warnAbsentNodes([]state.Node{n}, app)
	e.warnSignedOnly([]state.Node{n}, app, nil)
	out := stderr.String()
	if strings.Count(out, "warning:") != 6 {
		t.Fatalf("want six warnings, got:\n%s", out)
	}
	if strings.ContainsRune(out, '\x1b') || strings.ContainsRune(out, '\x07') {
		t.Fatalf("heartbeat fields printed unescaped:\n%q", out)
	}
}

// A heartbeat that points ctl at a node key it can read, and trusts that
// key, has ctl sign with it and name the node: any NATS client can write
// one, with any id.
func TestNodeKeyHeartbeatEscaped(t *testing.T) {
	const esc = "\x1b]0;owned\x07\u202e"
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "signing.key")
	if err := signing.WriteKeyFile(path, key.File()); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	e := &env{stdio: cli.IO{Stdout: io.Discard, Stderr: &stderr}, log: slog.New(slog.DiscardHandler)}
	n := state.Node{ID: "edge" + esc, SignaturesRequired: true, SigningKeyFile: path, TrustedKeys: []string{key.Public()}}
	k := e.nodeSigner(nil, []state.Node{n})
	if k == nil {
		t.Fatal("the node key of the heartbeat not used")
	}
	e.seal(k, []byte("name = \"hello\"\n"), nil, signedOrder{})
	if out := stderr.String(); !strings.Contains(out, "signing with the node key of edge") || strings.ContainsAny(out, "\x1b\x07\u202e") {
		t.Errorf("node id printed unescaped: %q", out)
	}
}

// app delete of an app that only cached specs still run names the nodes
// that run it, as their heartbeats give them: escaped like every other
// heartbeat field ctl prints.
func TestDeleteOfCachedAppEscapesNodeIDs(t *testing.T) {
	h := newHarness(t)
	n := state.Node{ID: "edge\x1b]0;owned\x07\u202e", OS: "linux", Time: time.Now().UTC(),
		Instances: []state.Instance{{App: "ghost", ID: "0-abc", State: state.Running}}}
	b, err := json.Marshal(n)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.NodesBucket).Put(context.Background(), "edge", b); err != nil {
		t.Fatal(err)
	}
	r := h.ok("", "app", "delete", "ghost")
	if strings.ContainsAny(r.out+r.err, "\x1b\x07\u202e") || !strings.Contains(r.out, `edge\x1b]0;owned\x07\u202e`) {
		t.Errorf("node id not printed escaped: %q", r.out+r.err)
	}
}
