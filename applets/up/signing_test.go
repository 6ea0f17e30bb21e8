package up_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/testutil"
)

// idleSpec is an app that runs the test binary until it is stopped.
func idleSpec(t *testing.T, name, node string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name+".toml")
	spec := fmt.Sprintf("name = %q\nversion = \"1\"\nnodes = [%q]\n[env]\n%s = \"1\"\n[health]\ntype = \"none\"\n[[routes]]\npath = \"/%s/\"\n", name, node, asIdleApp, name)
	if err := os.WriteFile(p, []byte(spec), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// appsKV is narun-apps of the narun up at natsAddr.
func appsKV(t *testing.T, natsAddr string) jetstream.KeyValue {
	t.Helper()
	return bucket(t, natsAddr, names.AppsBucket)
}

func bucket(t *testing.T, natsAddr, name string) jetstream.KeyValue {
	t.Helper()
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(context.Background(), name)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

// status is what narun ctl app status --json says of app.
type status struct {
	Desired  int    `json:"desired"`
	Ready    int    `json:"ready"`
	SignedBy string `json:"signed_by"`
}

func appStatus(t *testing.T, natsAddr, dataDir, app string) status {
	t.Helper()
	res, code := ctl(natsAddr, dataDir, "app", "status", app, "--json")
	var st status
	if code != 0 {
		return st
	}
	if err := json.Unmarshal([]byte(res), &st); err != nil {
		t.Fatalf("app status %s: %v\n%s", app, err, res)
	}
	return st
}

// By default narun up makes a node key and runs only what it signed: ctl
// on the device signs with it, and a spec written straight into
// narun-apps, as any app could, is refused, then and at later starts.
func TestUpRunsOnlySignedSpecs(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "upsign")

	keyFile := filepath.Join(dataDir, signing.NodeKeyFile)
	key, err := signing.LoadKey(keyFile)
	if err != nil {
		t.Fatalf("node key: %v\n%s", err, out.String())
	}
	if st, _ := os.Stat(keyFile); st.Mode().Perm() != 0o600 {
		t.Errorf("node key mode %04o, want 0600", st.Mode().Perm())
	}
	for _, want := range []string{key.Public(), keyFile, "narun ctl on this device signs with it"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("startup log lacks %q:\n%s", want, out.String())
		}
	}

	deployAndPlant(t, natsAddr, dataDir, "upsign", out)
	testutil.Eventually(t, 15*time.Second, "rogue spec refused", func() bool {
		return strings.Contains(out.String(), "app=rogue") && strings.Contains(out.String(), "spec refused: not signed")
	})
	if st := appStatus(t, natsAddr, dataDir, "rogue"); st.Ready != 0 {
		t.Errorf("unsigned spec runs: %+v", st)
	}
	stopUp(t, cmd, out, 20*time.Second)

	natsAddr, cmd, out = startNode(t, dataDir, "upsign")
	testutil.Eventually(t, 30*time.Second, "good runs again", func() bool { return appStatus(t, natsAddr, dataDir, "good").Ready == 1 })
	testutil.Eventually(t, 15*time.Second, "rogue spec refused again", func() bool {
		return strings.Contains(out.String(), "app=rogue") && strings.Contains(out.String(), "spec refused: not signed")
	})
	if v, err := appsKV(t, natsAddr).Get(context.Background(), "rogue"); err != nil || strings.Contains(string(v.Value()), "narun-signature") {
		t.Errorf("rogue spec after a restart: %v\n%s", err, v.Value())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// --signing=false runs unsigned specs and makes no key. The first start
// with signing over such a data dir, an upgraded install, signs what is
// stored, so that its apps keep running.
func TestUpAdoptsUnsignedSpecs(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "upold", "--signing=false")
	if res, code := ctl(natsAddr, dataDir, "deploy", idleSpec(t, "old", "upold"), "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("unsigned deploy with --signing=false: exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	if _, err := os.Stat(filepath.Join(dataDir, signing.NodeKeyFile)); !os.IsNotExist(err) {
		t.Errorf("--signing=false made a node key: %v", err)
	}
	if st := appStatus(t, natsAddr, dataDir, "old"); st.SignedBy != "" {
		t.Errorf("spec signed with --signing=false: %+v", st)
	}
	// The route entry as a ctl of an earlier release stored it, naming no
	// app: adopted, it names its app like the entries ctl stores now.
	if _, err := bucket(t, natsAddr, names.RoutesBucket).Put(context.Background(), "old", []byte(`[{"path":"/old/","service":"old"}]`)); err != nil {
		t.Fatal(err)
	}
	stopUp(t, cmd, out, 20*time.Second)

	natsAddr, cmd, out = startNode(t, dataDir, "upold")
	key, err := signing.LoadKey(filepath.Join(dataDir, signing.NodeKeyFile))
	if err != nil {
		t.Fatalf("node key: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "values=2") {
		t.Errorf("startup log does not say it signed the spec and the route entry:\n%s", out.String())
	}
	testutil.Eventually(t, 30*time.Second, "old runs, signed by the node key", func() bool {
		st := appStatus(t, natsAddr, dataDir, "old")
		return st.Ready == 1 && st.SignedBy == key.Public()
	})
	if strings.Contains(out.String(), "spec refused") {
		t.Errorf("a stored spec was refused after the upgrade:\n%s", out.String())
	}
	entry, err := bucket(t, natsAddr, names.RoutesBucket).Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	v, err := signing.NewVerifier("trusted_keys", []string{key.Public()})
	if err != nil {
		t.Fatal(err)
	}
	if body, err := v.Verify(entry.Value()); err != nil {
		t.Errorf("adopted route entry: %v\n%s", err, entry.Value())
	} else if e, err := gateway.DecodeEntry("old", body); err != nil || !e.Named || e.Sequence == 0 || len(e.Routes) != 1 || e.Routes[0].Path != "/old/" {
		t.Errorf("adopted route entry %s: %+v, %v", body, e, err)
	}
	spec, err := appsKV(t, natsAddr).Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := signing.Sequence(signing.Strip(spec.Value())); err != nil || seq == 0 {
		t.Errorf("adopted spec without a sequence (%v):\n%s", err, spec.Value())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// A start cut short while signing the values stored before signing
// leaves the key and a note beside it; the next start signs the rest with
// that key, rather than leaving them refused as a stranger's. It signs
// only what the note lists: a spec stored unsigned since, while the key
// made nodes refuse it, is an app's plant and stays refused.
func TestUpResumesAdoption(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "upcut", "--signing=false")
	if res, code := ctl(natsAddr, dataDir, "deploy", idleSpec(t, "old", "upcut"), "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("unsigned deploy with --signing=false: exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	// What a start cut short after signing the spec, not yet the route
	// entry, leaves behind.
	keyFile := filepath.Join(dataDir, signing.NodeKeyFile)
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	apps := appsKV(t, natsAddr)
	spec, err := apps.Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	route, err := bucket(t, natsAddr, names.RoutesBucket).Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	note := fmt.Sprintf("# list\n%s old %x\n%s old %x\n", names.AppsBucket, sha256.Sum256(spec.Value()), names.RoutesBucket, sha256.Sum256(route.Value()))
	if err := os.WriteFile(keyFile+".adopting", []byte(note), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := signing.WriteKeyFile(keyFile, key.File()); err != nil {
		t.Fatal(err)
	}
	if _, err := apps.Update(context.Background(), "old", key.Sign(spec.Value()), spec.Revision()); err != nil {
		t.Fatal(err)
	}
	plantRogue(t, apps, spec.Value())
	stopUp(t, cmd, out, 20*time.Second)

	natsAddr, cmd, out = startNode(t, dataDir, "upcut")
	if !strings.Contains(out.String(), "values=1") || strings.Contains(out.String(), "signed by another key") {
		t.Errorf("startup log does not say it signed the one value left:\n%s", out.String())
	}
	routes := bucket(t, natsAddr, names.RoutesBucket)
	keys, err := routes.ListKeys(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for k := range keys.Keys() {
		e, err := routes.Get(context.Background(), k)
		if err != nil {
			t.Fatal(err)
		}
		if pub, err := signing.SignedBy(e.Value()); pub != key.Public() || err != nil {
			t.Errorf("route entry %s signed by %q (%v), want the node key %s", k, pub, err, key.Public())
		}
		n++
	}
	if n != 1 {
		t.Errorf("%d route entries, want the one of old", n)
	}
	expectResumed(t, natsAddr, dataDir, keyFile, key, out)
	if !strings.Contains(out.String(), "narun-apps/rogue") {
		t.Errorf("startup log does not name the value it left unsigned:\n%s", out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// expectResumed checks what a resumed adoption leaves: no adopting file,
// old signed by the node key and running, the planted rogue unsigned and
// not running.
func expectResumed(t *testing.T, natsAddr, dataDir, keyFile string, key *signing.Key, out *testutil.LogBuffer) {
	t.Helper()
	if _, err := os.Lstat(keyFile + ".adopting"); !os.IsNotExist(err) {
		t.Errorf("adopting note left after the values were signed: %v", err)
	}
	if v, err := appsKV(t, natsAddr).Get(context.Background(), "rogue"); err != nil || strings.Contains(string(v.Value()), "narun-signature") {
		t.Errorf("spec planted during the adoption signed by the resumed start: %v\n%s", err, v.Value())
	}
	testutil.Eventually(t, 30*time.Second, "old runs, signed by the node key", func() bool {
		st := appStatus(t, natsAddr, dataDir, "old")
		return st.Ready == 1 && st.SignedBy == key.Public()
	})
	if st := appStatus(t, natsAddr, dataDir, "rogue"); st.Ready != 0 {
		t.Errorf("planted spec runs: %+v\nnarun up:\n%s", st, out.String())
	}
}

// An adoption cut short by a release that listed nothing in its adopting
// file (af9fc39, testdata/adopting-af9fc39) is resumed by this one: the
// unsigned values stored before that file are signed and run, and one
// stored after it stays refused.
func TestUpResumesAdoptionOfEarlierRelease(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "upold", "--signing=false")
	if res, code := ctl(natsAddr, dataDir, "deploy", idleSpec(t, "old", "upold"), "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("unsigned deploy with --signing=false: exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	// What that release left when cut short before it signed anything.
	keyFile := filepath.Join(dataDir, signing.NodeKeyFile)
	note, err := os.ReadFile("testdata/adopting-af9fc39")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile+".adopting", note, 0o600); err != nil {
		t.Fatal(err)
	}
	// Written after every value of old, before the plant below.
	written := time.Now()
	if err := os.Chtimes(keyFile+".adopting", written, written); err != nil {
		t.Fatal(err)
	}
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	if err := signing.WriteKeyFile(keyFile, key.File()); err != nil {
		t.Fatal(err)
	}
	apps := appsKV(t, natsAddr)
	spec, err := apps.Get(context.Background(), "old")
	if err != nil {
		t.Fatal(err)
	}
	plantRogue(t, apps, spec.Value())
	stopUp(t, cmd, out, 20*time.Second)

	natsAddr, cmd, out = startNode(t, dataDir, "upold")
	if !strings.Contains(out.String(), "values=2") {
		t.Errorf("startup log does not say it signed the spec and route entry of old:\n%s", out.String())
	}
	expectResumed(t, natsAddr, dataDir, keyFile, key, out)
	stopUp(t, cmd, out, 20*time.Second)
}

// A node key made anew over a data dir that already holds signed values,
// its key file lost, signs nothing: the unsigned values there are ones
// nodes refused, planted perhaps, not ones that ran before signing.
func TestUpAdoptsNothingAfterKeyLoss(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "uplost")
	keyFile := filepath.Join(dataDir, signing.NodeKeyFile)
	old, err := signing.LoadKey(keyFile)
	if err != nil {
		t.Fatalf("node key: %v\n%s", err, out.String())
	}
	deployAndPlant(t, natsAddr, dataDir, "uplost", out)
	stopUp(t, cmd, out, 20*time.Second)
	if err := os.Remove(keyFile); err != nil {
		t.Fatal(err)
	}

	natsAddr, cmd, out = startNode(t, dataDir, "uplost")
	if _, err := signing.LoadKey(keyFile); err != nil {
		t.Fatalf("new node key: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "signed by another key") || !strings.Contains(out.String(), old.Public()) {
		t.Errorf("startup log does not warn of the values the lost key %s signed:\n%s", old.Public(), out.String())
	}
	testutil.Eventually(t, 15*time.Second, "rogue spec refused", func() bool {
		return strings.Contains(out.String(), "app=rogue") && strings.Contains(out.String(), "spec refused: not signed")
	})
	if v, err := appsKV(t, natsAddr).Get(context.Background(), "rogue"); err != nil || strings.Contains(string(v.Value()), "narun-signature") {
		t.Errorf("planted spec after the key was made anew: %v\n%s", err, v.Value())
	}
	if st := appStatus(t, natsAddr, dataDir, "rogue"); st.Ready != 0 {
		t.Errorf("planted spec runs: %+v", st)
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// ctl on the device without narun up's data dir finds the node key
// through the node's heartbeat, as a script that starts narun up with
// --data-dir and then deploys does.
func TestUpNodeKeyWithoutDataDir(t *testing.T) {
	t.Parallel()
	dataDir := t.TempDir()
	natsAddr, cmd, out := startNode(t, dataDir, "upbeat")
	keyFile := filepath.Join(dataDir, signing.NodeKeyFile)
	otherDir := t.TempDir()
	testutil.Eventually(t, 15*time.Second, "heartbeat naming the node key", func() bool {
		res, code := ctl(natsAddr, otherDir, "node", "list", "--json")
		return code == 0 && strings.Contains(res, `"signing_key_file": "`+keyFile+`"`)
	})
	res, code := ctl(natsAddr, otherDir, "deploy", idleSpec(t, "beat", "upbeat"), "--binary", os.Args[0], "--wait", "--timeout", "60s")
	if code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	if want := "signing with the node key of upbeat (" + keyFile + ")"; !strings.Contains(res, want) {
		t.Errorf("deploy output lacks %q:\n%s", want, res)
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// deployAndPlant deploys app "good" to node with ctl, which signs it, then
// stores "rogue" as an app on the device could: the same spec, pinning the
// same binary, without the signature.
func deployAndPlant(t *testing.T, natsAddr, dataDir, node string, out *testutil.LogBuffer) {
	t.Helper()
	if res, code := ctl(natsAddr, dataDir, "deploy", idleSpec(t, "good", node), "--binary", os.Args[0], "--wait", "--timeout", "60s"); code != 0 {
		t.Fatalf("deploy exit %d:\n%s\nnarun up:\n%s", code, res, out.String())
	}
	kv := appsKV(t, natsAddr)
	good, err := kv.Get(context.Background(), "good")
	if err != nil {
		t.Fatal(err)
	}
	rogue := strings.Replace(string(signing.Strip(good.Value())), `name = "good"`, `name = "rogue"`, 1)
	if _, err := kv.Put(context.Background(), "rogue", []byte(rogue)); err != nil {
		t.Fatal(err)
	}
}

// startNode runs narun up as node on dataDir, with only NATS and the
// runner's admin listening (free ports), until its runner is healthy.
func startNode(t *testing.T, dataDir, node string, args ...string) (natsAddr string, cmd *exec.Cmd, out *testutil.LogBuffer) {
	t.Helper()
	natsAddr, runnerAdmin := testutil.FreeAddr(t), testutil.FreeAddr(t)
	cmd, out = startUp(t, dataDir, append(args, "--node-id", node, "--nats-listen", natsAddr, "--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)...)
	healthy(t, runnerAdmin)
	return natsAddr, cmd, out
}

// trusted_keys in one of [runner] and [gateway] turns the node key off
// for both: narun up says that the other part then checks nothing.
func TestUpWarnsOfOneSidedTrust(t *testing.T) {
	t.Parallel()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	config := filepath.Join(t.TempDir(), "narun.toml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf("[runner]\ntrusted_keys = [%q]\n", key.Public())), 0o600); err != nil {
		t.Fatal(err)
	}
	runnerAdmin := testutil.FreeAddr(t)
	cmd, out := startUp(t, t.TempDir(), "--config", config, "--node-id", "uptrust", "--nats-listen", testutil.FreeAddr(t),
		"--listen", "", "--admin-listen", "", "--runner-admin-listen", runnerAdmin)
	healthy(t, runnerAdmin)
	if !strings.Contains(out.String(), "[gateway] trusted_keys is not") {
		t.Errorf("no warning that the gateway checks nothing:\n%s", out.String())
	}
	stopUp(t, cmd, out, 20*time.Second)
}

// plantRogue stores, unsigned, a copy of the spec of old named rogue: what
// something other than ctl may write while an adoption is cut short.
func plantRogue(t *testing.T, apps jetstream.KeyValue, old []byte) {
	t.Helper()
	rogue := strings.Replace(string(old), `name = "old"`, `name = "rogue"`, 1)
	if _, err := apps.Put(context.Background(), "rogue", []byte(rogue)); err != nil {
		t.Fatal(err)
	}
}
