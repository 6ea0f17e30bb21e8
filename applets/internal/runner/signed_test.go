package runner

import (
	"bytes"
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/testutil"
)

func newSigningKey(t *testing.T) *signing.Key {
	t.Helper()
	k, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// putSigned uploads bin and stores the spec putSpec would, signed by key
// (nil leaves it unsigned), then changed by edit (nil changes nothing).
func (c *cluster) putSigned(t *testing.T, key *signing.Key, app, version, bin string, edit func([]byte) []byte) {
	t.Helper()
	value := storedSpec(t, app, version, c.upload(t, app, version, bin), fileDigest(t, bin), "")
	if key != nil {
		value = key.Sign(value)
	}
	if edit != nil {
		value = edit(value)
	}
	if _, err := c.apps.Put(context.Background(), app, value); err != nil {
		t.Fatal(err)
	}
}

func trusting(keys ...*signing.Key) func(*Options) {
	return func(o *Options) {
		for _, k := range keys {
			o.Config.TrustedKeys = append(o.Config.TrustedKeys, k.Public())
		}
	}
}

// waitRefused waits for the runner to log that it refused app's spec, with
// why.
func (tr *testRunner) waitRefused(t *testing.T, app, why string) {
	t.Helper()
	testutil.Eventually(t, 10*time.Second, "refusal of "+app+"'s spec logged", func() bool {
		for line := range strings.Lines(tr.logs.String()) {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, " app="+app+" ") && strings.Contains(line, `err="spec refused: `+why) {
				return true
			}
		}
		return false
	})
}

// A runner with a trusted key runs what that key signed and nothing else:
// not an unsigned spec, not one changed after it was signed, not one
// another key signed. A refused spec never reaches the spec cache, and one
// that replaces a running spec leaves its instance as it was.
func TestOnlySignedSpecsRun(t *testing.T) {
	t.Parallel()
	key, other := newSigningKey(t), newSigningKey(t)
	c := newCluster(t, nil)
	tr := startRunner(t, c, trusting(key))
	c.putSigned(t, key, "signed", "1.0.0", helloBin, nil)
	c.putSigned(t, nil, "unsigned", "1.0.0", helloBin, nil)
	c.putSigned(t, key, "tampered", "1.0.0", helloBin, func(v []byte) []byte {
		return bytes.Replace(v, []byte("\nnodes = ["), []byte("\nreplicas = 3\nnodes = ["), 1)
	})
	c.putSigned(t, other, "untrusted", "1.0.0", helloBin, nil)

	running := tr.wait(t, "signed", "healthy", allIn(1, state.Healthy))[0]
	if logs := tr.logs.String(); !strings.Contains(logs, "runs only specs signed by 1 trusted key(s)") {
		t.Errorf("runner log does not say it checks signatures:\n%s", logs)
	}
	if !tr.nodeState().SignaturesRequired {
		t.Error("heartbeat does not say the node requires signatures")
	}
	for app, why := range map[string]string{
		"unsigned":  "not signed, and this node runs only what a trusted key signed",
		"tampered":  "signature of " + key.Public() + " does not match",
		"untrusted": "signed by " + other.Public() + ", which this node does not trust",
	} {
		tr.waitRefused(t, app, why)
		if l := tr.of(app); len(l) > 0 {
			t.Errorf("%s spec runs: %+v", app, l)
		}
		if _, err := os.Stat(filepath.Join(tr.dir, "specs", app+".toml")); !os.IsNotExist(err) {
			t.Errorf("%s spec cached: %v", app, err)
		}
	}
	// The admin page says why an app does not run.
	rec := httptest.NewRecorder()
	tr.AdminHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if want := "unsigned: spec refused: not signed"; !strings.Contains(rec.Body.String(), want) {
		t.Errorf("admin page lacks %q:\n%s", want, rec.Body.String())
	}

	cached, err := os.ReadFile(filepath.Join(tr.dir, "specs", "signed.toml"))
	if err != nil {
		t.Fatal(err)
	}
	c.putSigned(t, nil, "signed", "2.0.0", helloBin, nil)
	tr.waitRefused(t, "signed", "not signed")
	if l := tr.of("signed"); len(l) != 1 || l[0].ID != running.ID || l[0].PID != running.PID || l[0].Version != "1.0.0" || l[0].State != state.Healthy {
		t.Errorf("instance changed by a refused spec: %+v -> %+v", running, l)
	}
	if now, _ := os.ReadFile(filepath.Join(tr.dir, "specs", "signed.toml")); !bytes.Equal(now, cached) {
		t.Errorf("cached spec replaced by a refused one:\n%s", now)
	}
}

// A signature is a TOML comment: a runner that trusts no key runs a signed
// spec as any other.
func TestSignedSpecRunsWithoutTrustedKeys(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	c.putSigned(t, newSigningKey(t), "hello", "1.0.0", helloBin, nil)
	tr.wait(t, "hello", "healthy", allIn(1, state.Healthy))
	if tr.nodeState().SignaturesRequired {
		t.Error("heartbeat of a runner without trusted keys says it requires signatures")
	}
}

// A runner started without NATS checks the specs it cached as it checks
// narun-apps: one cached before trusted keys were set, unsigned, does not
// start, while a signed one does.
func TestCachedUnsignedSpecRefusedOffline(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t)
	c := newCluster(t, nil)
	first := startRunner(t, c, nil)
	c.putSigned(t, key, "signed", "1.0.0", helloBin, nil)
	c.putSigned(t, nil, "plain", "1.0.0", helloBin, nil)
	first.wait(t, "signed", "healthy", allIn(1, state.Healthy))
	first.wait(t, "plain", "healthy", allIn(1, state.Healthy))
	first.stop()

	offline, err := nats.Connect("nats://"+testutil.FreeAddr(t), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(offline.Close)
	second := startRunner(t, c, func(o *Options) {
		o.DataDir, o.Conn = first.dir, offline
		trusting(key)(o)
	})
	second.wait(t, "signed", "healthy from the cached spec", allIn(1, state.Healthy))
	second.waitRefused(t, "plain", "not signed")
	if l := second.of("plain"); len(l) > 0 {
		t.Errorf("cached unsigned spec runs: %+v", l)
	}
}

func TestBadTrustedKey(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	_, err := New(Options{Config: config.Runner{NodeID: node, TrustedKeys: []string{"narun-ed25519:short"}}, DataDir: t.TempDir(), Conn: c.nc})
	if err == nil || !strings.Contains(err.Error(), "runner.trusted_keys[0]") {
		t.Errorf("New with a bad trusted key: %v, want an error naming runner.trusted_keys[0]", err)
	}
}

// putSequenced stores the spec putSpec would, with sequence seq, signed
// by key, and returns it.
func (c *cluster) putSequenced(t *testing.T, key *signing.Key, app, version, bin string, seq uint64) []byte {
	t.Helper()
	value := key.Sign(signing.WithSequence(storedSpec(t, app, version, c.upload(t, app, version, bin), fileDigest(t, bin), ""), seq))
	c.putRaw(t, app, value)
	return value
}

func (c *cluster) putRaw(t *testing.T, app string, value []byte) {
	t.Helper()
	if _, err := c.apps.Put(context.Background(), app, value); err != nil {
		t.Fatal(err)
	}
}

// signedHello runs a runner trusting a new key, and hello 1.0.0 on it
// signed with sequence 200; it returns them and hello's instance.
func signedHello(t *testing.T) (*signing.Key, *cluster, *testRunner, state.Instance) {
	t.Helper()
	key := newSigningKey(t)
	c := newCluster(t, nil)
	tr := startRunner(t, c, trusting(key))
	c.putSequenced(t, key, "hello", "1.0.0", helloBin, 200)
	return key, c, tr, tr.wait(t, "hello", "1.0.0 healthy", allIn(1, state.Healthy))[0]
}

// A spec the key signed before, stored again, is refused and leaves the
// instances as they are: an earlier version, and the last spec of an app
// deleted since, also after the runner restarts.
func TestReplayedSpecRefused(t *testing.T) {
	t.Parallel()
	key, c, tr, running := signedHello(t)

	c.putSequenced(t, key, "hello", "0.9.0", helloBin, 100)
	tr.waitRefused(t, "hello", `sequence 100, below 200 accepted before for \"hello\"`)
	if l := tr.of("hello"); len(l) != 1 || l[0].ID != running.ID || l[0].Version != "1.0.0" {
		t.Errorf("instance changed by a replayed spec: %+v -> %+v", running, l)
	}

	last := c.putSequenced(t, key, "hello", "2.0.0", helloBin, 300)
	tr.wait(t, "hello", "2.0.0 healthy", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == "2.0.0" && l[0].State == state.Healthy
	})
	c.remove(t, "hello")
	tr.wait(t, "hello", "no instance", func(l []state.Instance) bool { return len(l) == 0 })
	c.putRaw(t, "hello", last)
	const deleted = `sequence 300, that of the value \"hello\" held when it was deleted`
	tr.waitRefused(t, "hello", deleted)
	if l := tr.of("hello"); len(l) != 0 {
		t.Errorf("a deleted app's last spec runs again: %+v", l)
	}

	tr.stop()
	again := startRunner(t, c, func(o *Options) {
		o.DataDir = tr.dir
		trusting(key)(o)
	})
	again.waitRefused(t, "hello", deleted)
	if l := again.of("hello"); len(l) != 0 {
		t.Errorf("after a restart, a deleted app's last spec runs again: %+v", l)
	}
	// A deploy after the deletion brings it back.
	c.putSequenced(t, key, "hello", "3.0.0", helloBin, 400)
	again.wait(t, "hello", "3.0.0 healthy", allIn(1, state.Healthy))
}

// A sequence whose write failed (a full disk) is written at a later
// resync, though no later spec comes: a restart would otherwise accept an
// earlier spec stored again.
func TestSequenceKeptOnceWritable(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t)
	c := newCluster(t, nil)
	tr := startRunner(t, c, func(o *Options) {
		trusting(key)(o)
		o.Config.ResyncInterval = config.Duration(50 * time.Millisecond)
	})
	// A directory that is not empty cannot be replaced by the file.
	path := filepath.Join(tr.dir, sequencesFile)
	if err := os.MkdirAll(filepath.Join(path, "in-the-way"), 0o750); err != nil {
		t.Fatal(err)
	}
	c.putSequenced(t, key, "seq", "1.0.0", helloBin, 5)
	testutil.Eventually(t, 10*time.Second, "the failed write of the sequence logged", func() bool {
		return strings.Contains(tr.logs.String(), "sequence of the spec not kept")
	})
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 10*time.Second, "the sequence written", func() bool {
		b, err := os.ReadFile(path)
		return err == nil && strings.Contains(string(b), `"seq":{"sequence":5,`)
	})
}

// Two values signed with one sequence (an earlier ctl's app restart edits
// restarted_at and keeps the sequence line) are not both accepted: stored
// in turn, each would pass as the other read again and restart the app.
func TestSecondValueOfASequenceRefused(t *testing.T) {
	t.Parallel()
	key, c, tr, running := signedHello(t)

	c.putSequenced(t, key, "hello", "1.0.1", helloBin, 200)
	tr.waitRefused(t, "hello", `sequence 200, that of another value accepted before for \"hello\"`)
	if l := tr.of("hello"); len(l) != 1 || l[0].ID != running.ID || l[0].Version != "1.0.0" {
		t.Errorf("instance changed by another value of the sequence: %+v -> %+v", running, l)
	}
	c.putSequenced(t, key, "hello", "2.0.0", helloBin, 300)
	tr.wait(t, "hello", "2.0.0 healthy", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == "2.0.0" && l[0].State == state.Healthy
	})
}

// A sequences.json that does not read (a damaged disk) costs the node its
// memory of sequences, not its apps: it starts, says so, and runs what is
// stored, as a new node does.
func TestDamagedSequencesFileStartsAsANewNode(t *testing.T) {
	t.Parallel()
	key := newSigningKey(t)
	c := newCluster(t, nil)
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, sequencesFile), []byte("{\"hello\": {\"seq"), 0o600); err != nil {
		t.Fatal(err)
	}
	tr := startRunner(t, c, func(o *Options) {
		o.DataDir = dir
		trusting(key)(o)
	})
	c.putSequenced(t, key, "hello", "1.0.0", helloBin, 100)
	tr.wait(t, "hello", "1.0.0 healthy", allIn(1, state.Healthy))
	if logs := tr.logs.String(); !strings.Contains(logs, filepath.Join(dir, sequencesFile)) || !strings.Contains(logs, "as a new node does") {
		t.Errorf("the log does not say the damaged file was not read:\n%s", logs)
	}
	testutil.Eventually(t, 10*time.Second, "sequences.json written anew", func() bool {
		b, err := os.ReadFile(filepath.Join(dir, sequencesFile))
		return err == nil && strings.Contains(string(b), `"hello":{"sequence":100,`)
	})
}

// A spec whose caching failed (a full disk) leaves the sequence kept on
// disk at that of the spec the cache still holds, while the runner refuses
// what is below the new one all the same: kept ahead, it would have a
// restart without NATS refuse the cached spec, and the app stay down until
// NATS answers.
func TestSequenceNotKeptAheadOfTheCachedSpec(t *testing.T) {
	t.Parallel()
	key, c, tr, _ := signedHello(t)
	path := filepath.Join(tr.specsDir(), "hello.toml")
	cached, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A directory that is not empty cannot be replaced by the file.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(path, "in-the-way"), 0o750); err != nil {
		t.Fatal(err)
	}
	c.putSequenced(t, key, "hello", "2.0.0", helloBin, 300)
	tr.wait(t, "hello", "2.0.0 healthy", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].Version == "2.0.0" && l[0].State == state.Healthy
	})
	testutil.Eventually(t, 10*time.Second, "the failed write of the cached spec logged", func() bool {
		return strings.Contains(tr.logs.String(), "cache spec")
	})
	c.putSequenced(t, key, "hello", "2.5.0", helloBin, 250)
	tr.waitRefused(t, "hello", `sequence 250, below 300 accepted before for \"hello\"`)
	tr.stop()

	// What the failed write left: the spec before in the cache.
	if err := os.RemoveAll(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, cached, 0o600); err != nil {
		t.Fatal(err)
	}
	offline, err := nats.Connect("nats://"+testutil.FreeAddr(t), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(offline.Close)
	again := startRunner(t, c, func(o *Options) {
		o.DataDir, o.Conn = tr.dir, offline
		trusting(key)(o)
	})
	var runs []state.Instance
	testutil.Eventually(t, 30*time.Second, "the cached spec started or refused", func() bool {
		runs = again.of("hello")
		return allIn(1, state.Healthy)(runs) || strings.Contains(again.logs.String(), "spec refused")
	})
	if len(runs) != 1 || runs[0].Version != "1.0.0" || runs[0].State != state.Healthy {
		t.Fatalf("cached spec 1.0.0 not started without NATS: instances %+v; log:\n%s", runs, again.logs.String())
	}
	if b, err := os.ReadFile(filepath.Join(tr.dir, sequencesFile)); err != nil || !strings.Contains(string(b), `"hello":{"sequence":200,`) {
		t.Errorf("sequences kept: %s (%v), want hello's at 200, that of the cached spec", b, err)
	}
}
