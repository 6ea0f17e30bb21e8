package ctl

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

// plantedBinary is the object a planted spec pins: in narun-binaries, as
// an app that writes there would leave it.
const plantedBinary = "hello/1.0.0/linux-planted"

// plant writes hello's spec into narun-apps as an app could, bypassing
// ctl: unsigned, pinning plantedBinary, with a restarted_at.
func (h *harness) plant() []byte {
	h.t.Helper()
	payload := []byte("#!/bin/sh\n")
	sum := sha256.Sum256(payload)
	obs, err := store.Objects(context.Background(), h.js, names.BinariesBucket, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := obs.PutBytes(context.Background(), plantedBinary, payload); err != nil {
		h.t.Fatal(err)
	}
	planted, err := spec.WithBinaries("planted", []byte(helloSpec), map[string]spec.Binary{
		runtime.GOARCH: {Object: plantedBinary, SHA256: hex.EncodeToString(sum[:])},
	})
	if err != nil {
		h.t.Fatal(err)
	}
	if planted, err = spec.SetRestartedAt("planted", planted, time.Now()); err != nil {
		h.t.Fatal(err)
	}
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", planted); err != nil {
		h.t.Fatal(err)
	}
	return planted
}

// hasObject reports whether bucket holds name.
func (h *harness) hasObject(bucket, name string) bool {
	h.t.Helper()
	obs, err := h.js.ObjectStore(context.Background(), bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	_, err = obs.GetInfo(context.Background(), name)
	if err != nil && !isNotFound(err) {
		h.t.Fatal(err)
	}
	return err == nil
}

// app restart signs only a stored spec its own key signed: signing any
// other would make nodes run what an app wrote into narun-apps.
func TestRestartRefusesSpecNotOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	ours, _ := h.get(names.AppsBucket, "hello")
	other, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		stored func() []byte
		want   string
	}{
		{"unsigned", h.plant, "(unsigned)"},
		{"tampered", func() []byte {
			tampered := bytes.Replace(ours, []byte("replicas = 2"), []byte("replicas = 3"), 1)
			if bytes.Equal(tampered, ours) {
				t.Fatalf("nothing to tamper with in\n%s", ours)
			}
			return tampered
		}, "(changed after it was signed)"},
		{"another key", func() []byte { return other.Sign(signing.Strip(ours)) }, "(signed by " + other.Public() + ")"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stored := tt.stored()
			if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", stored); err != nil {
				t.Fatal(err)
			}
			r := h.fails(1, "", "app", "restart", "hello")
			if want := "the stored spec of hello is not signed by this ctl's key " + tt.want; !strings.Contains(r.err, want) || !strings.Contains(r.err, "--binary") {
				t.Errorf("restart: %s\nwant %q", r.err, want)
			}
			if now, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(now, stored) {
				t.Errorf("refused restart changed the stored spec:\n%s", now)
			}
		})
	}
}

// deploy without --binary keeps what the stored spec pins only when its
// own key signed it; with --binary the new spec replaces a stored one it
// did not sign and carries nothing over.
func TestDeployOverSpecNotOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, public := h.keygen("sign.key")
	h.useSigningKey(path)
	// The planted build is spared for what names it, not for its age.
	h.pruneGrace("0s")
	p := h.file("hello.toml", helloSpec)
	planted := h.plant()

	r := h.fails(1, "", "deploy", p)
	if !strings.Contains(r.err, "the stored spec of hello is not signed by this ctl's key (unsigned)") {
		t.Errorf("deploy without --binary over a planted spec: %s", r.err)
	}
	if now, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(now, planted) {
		t.Errorf("refused deploy changed the stored spec:\n%s", now)
	}
	if n := h.objectCount(names.BinariesBucket); n != 1 {
		t.Errorf("refused deploy: %d objects in %s, want only the planted one", n, names.BinariesBucket)
	}

	h.ok("", "deploy", p, "--binary", elfBinary(t))
	stored, _ := h.get(names.AppsBucket, "hello")
	body, err := verifier(t, public).Verify(stored)
	if err != nil {
		t.Fatalf("stored spec: %v\n%s", err, stored)
	}
	app, err := spec.Parse("stored", body)
	if err != nil {
		t.Fatal(err)
	}
	if app.Binaries[runtime.GOARCH].Object == plantedBinary || app.RestartedAt != "" {
		t.Errorf("deploy --binary carried over the planted spec:\n%s", stored)
	}
	if !h.hasObject(names.BinariesBucket, plantedBinary) {
		t.Error("deploy --binary pruned an object only the planted spec named")
	}
}

// The route clash check counts only entries ctl's key signed: an app that
// claims another app's path in narun-routes must not keep it from being
// deployed. route list marks the entries gateways may ignore.
func TestRouteClashIgnoresEntriesNotOurs(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	squatter, err := spec.Parse("aaa.toml", []byte(strings.ReplaceAll(helloSpec, `name = "hello"`, `name = "aaa"`)))
	if err != nil {
		t.Fatal(err)
	}
	entry, err := json.Marshal(squatter.Routes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.RoutesBucket).Put(context.Background(), "aaa", entry); err != nil {
		t.Fatal(err)
	}
	p := h.file("hello.toml", helloSpec)
	r := h.ok("", "deploy", p, "--binary", elfBinary(t))
	if !strings.Contains(r.err, `the routes entry "aaa" in narun-routes is not signed by this ctl's key (unsigned)`) {
		t.Errorf("deploy over an unsigned clashing entry, stderr:\n%s", r.err)
	}

	r = h.ok("", "route", "list")
	if !strings.Contains(r.out, "aaa (unsigned)") || strings.Contains(r.out, "hello (") {
		t.Errorf("route list:\n%s", r.out)
	}
	if r := h.ok("", "route", "list", "--json"); strings.Count(r.out, `"not_ours": "unsigned"`) != 1 {
		t.Errorf("route list --json:\n%s", r.out)
	}

	// An entry the key signed still counts.
	key, err := signing.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.RoutesBucket).Put(context.Background(), "aaa", key.Sign(entry)); err != nil {
		t.Fatal(err)
	}
	if r := h.fails(1, "", "deploy", p); !strings.Contains(r.err, `duplicate route`) {
		t.Errorf("deploy over a signed clashing entry: %s", r.err)
	}
}

// Re-pinning a file whose content changed since the stored spec pinned it
// is allowed (files put then app restart) but said: an app may have
// replaced the object.
func TestRepinWarns(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	short := func(s string) string {
		d := sha256.Sum256([]byte(s))
		return hex.EncodeToString(d[:])[:12]
	}
	put := func(content string) {
		t.Helper()
		h.ok("", "files", "put", "v.conf", h.file("v.src", content))
	}
	put("a\n")
	p := h.file("app.toml", "name = \"app\"\nversion = \"1\"\nnodes = [\"n\"]\n[[files]]\nobject = \"v.conf\"\npath = \"v.conf\"\n")
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	if r := h.ok("", "deploy", p); strings.Contains(r.err, "changed since") {
		t.Errorf("deploy with the same file warns:\n%s", r.err)
	}
	warning := func(from, to string) string {
		return "warning: file v.conf changed since the last deploy: pinning its new content (sha256 " + short(from) + "… → " + short(to) + "…); if you did not run narun ctl files put for it, something else replaced it"
	}

	put("b\n")
	if r := h.ok("", "app", "restart", "app"); !strings.Contains(r.err, warning("a\n", "b\n")) {
		t.Errorf("restart after the file changed, stderr:\n%s", r.err)
	}
	put("c\n")
	if r := h.ok("", "deploy", p); !strings.Contains(r.err, warning("b\n", "c\n")) {
		t.Errorf("deploy after the file changed, stderr:\n%s", r.err)
	}
}

// A spec and a route entry this ctl's key signed for hello, planted under
// another app's key, are not that app's: ctl neither restarts nor rolls
// back to the spec, nor counts the entry as a clash or lists it, as
// nodes refuse both there. And the entry ctl stores names its app.
func TestSignedValuesBoundToTheirKey(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	spec, _ := h.get(names.AppsBucket, "hello")
	entry, _ := h.get(names.RoutesBucket, "hello")
	if e, err := gateway.DecodeEntry("hello", signing.Strip(entry)); err != nil || !e.Named {
		t.Errorf("stored entry %s: named %v, %v", entry, e.Named, err)
	}
	if _, err := gateway.DecodeEntry("other", signing.Strip(entry)); err == nil || !strings.Contains(err.Error(), `names app "hello"`) {
		t.Errorf("hello's entry read under another key: %v", err)
	}

	ctx := context.Background()
	// Twice, so that rollback has an earlier revision to go to.
	var first uint64
	for range 2 {
		rev, err := h.kv(names.AppsBucket).Put(ctx, "other", spec)
		if err != nil {
			t.Fatal(err)
		}
		first = cmp.Or(first, rev)
	}
	if _, err := h.kv(names.RoutesBucket).Put(ctx, "other", entry); err != nil {
		t.Fatal(err)
	}
	if r := h.fails(1, "", "app", "restart", "other"); !strings.Contains(r.err, `spec name "hello" differs from its key "other"`) {
		t.Errorf("restart of a spec planted under another key: %s", r.err)
	}
	if r := h.fails(1, "", "app", "rollback", "other", "--to", strconv.FormatUint(first, 10)); !strings.Contains(r.err, `spec name "hello" differs from its key "other"`) {
		t.Errorf("rollback to a spec planted under another key: %s", r.err)
	}
	if r := h.ok("", "app", "status", "other"); !strings.Contains(r.out, "differs from its key") {
		t.Errorf("status of a spec planted under another key: %s", r.out)
	}
	if r := h.ok("", "route", "list", "--json"); strings.Contains(r.out, `"app": "other"`) || !strings.Contains(r.out, `"app": "hello"`) {
		t.Errorf("route list with hello's entry planted under other:\n%s", r.out)
	}
	// hello's paths are held by hello's entry only: deploying it again
	// finds no clash with the copy under other.
	h.ok("", "deploy", h.file("hello.toml", helloSpec))
}

// Every spec and route entry ctl signs carries a sequence above the ones
// its key signed for the app before: restart and rollback too, and a
// deploy after the app was deleted, whose values only the history keeps,
// whatever ctl's clock says. A value ctl's key did not sign does not move
// it, whatever sequence it claims.
func TestSignedSequencesGoForward(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	key, err := signing.LoadKey(path)
	if err != nil {
		t.Fatal(err)
	}
	specSeq := func() uint64 {
		t.Helper()
		v, _ := h.get(names.AppsBucket, "hello")
		seq, err := signing.Sequence(signing.Strip(v))
		if err != nil || seq == 0 {
			t.Fatalf("stored spec has no sequence (%v):\n%s", err, v)
		}
		return seq
	}
	entrySeq := func() uint64 {
		t.Helper()
		v, _ := h.get(names.RoutesBucket, "hello")
		e, err := gateway.DecodeEntry("hello", signing.Strip(v))
		if err != nil || e.Sequence == 0 {
			t.Fatalf("stored entry has no sequence (%v):\n%s", err, v)
		}
		return e.Sequence
	}
	p := h.file("hello.toml", helloSpec)
	bin := elfBinary(t)
	h.ok("", "deploy", p, "--binary", bin)
	first := specSeq()
	if now := uint64(time.Now().UnixMilli()); first > now || now-first > 60_000 {
		t.Errorf("first sequence %d is not the time in ms (%d)", first, now)
	}
	entrySeq()
	// Unchanged, deployed again: nothing stored anew, sequences included.
	spec1, _ := h.get(names.AppsBucket, "hello")
	entry1, _ := h.get(names.RoutesBucket, "hello")
	h.ok("", "deploy", p)
	if spec2, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(spec2, spec1) {
		t.Errorf("unchanged deploy stored the spec anew:\n%s\nwas\n%s", spec2, spec1)
	}
	if entry2, _ := h.get(names.RoutesBucket, "hello"); !bytes.Equal(entry2, entry1) {
		t.Errorf("unchanged deploy stored the route entry anew:\n%s\nwas\n%s", entry2, entry1)
	}

	h.ok("", "app", "restart", "hello")
	restarted := specSeq()
	if restarted <= first {
		t.Errorf("restart: sequence %d, not above %d", restarted, first)
	}
	h.ok("", "deploy", h.file("hello3.toml", strings.Replace(helloSpec, "replicas = 2", "replicas = 3", 1)))
	changed := specSeq()
	if changed <= restarted {
		t.Errorf("deploy: sequence %d, not above %d", changed, restarted)
	}
	h.ok("", "app", "rollback", "hello")
	if got := specSeq(); got <= changed {
		t.Errorf("rollback: sequence %d, not above %d", got, changed)
	}
	// The sequence is not the spec: history finds the restored revision
	// the same as the one it restored, and prints the spec without it.
	var revs []struct {
		Revision uint64 `json:"revision"`
		SameAs   uint64 `json:"same_as"`
	}
	if r := h.ok("", "app", "history", "hello", "--json"); json.Unmarshal([]byte(r.out), &revs) != nil || len(revs) != 4 || revs[0].SameAs != revs[2].Revision {
		t.Errorf("history after the rollback: %+v\n%s", revs, r.out)
	}
	if r := h.ok("", "app", "history", "hello", "--revision", strconv.FormatUint(revs[0].Revision, 10)); strings.Contains(r.out, "narun-sequence") {
		t.Errorf("history --revision prints the sequence line:\n%s", r.out)
	}

	// A spec the key signed with a sequence far ahead (an operator whose
	// clock was a day ahead), then the app deleted: the next deploy still
	// comes after it. A higher one nobody's key signed is not counted.
	ctx := context.Background()
	ahead := uint64(time.Now().Add(24 * time.Hour).UnixMilli())
	cur, _ := h.get(names.AppsBucket, "hello")
	if _, err := h.kv(names.AppsBucket).Put(ctx, "hello", key.Sign(signing.WithSequence(signing.Strip(cur), ahead))); err != nil {
		t.Fatal(err)
	}
	entry, err := gateway.EncodeEntry("hello", []config.Route{{Path: "/hello/", Service: "hello"}}, ahead)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.RoutesBucket).Put(ctx, "hello", key.Sign(entry)); err != nil {
		t.Fatal(err)
	}
	if _, err := h.kv(names.AppsBucket).Put(ctx, "hello", signing.WithSequence(signing.Strip(cur), ahead*2)); err != nil {
		t.Fatal(err)
	}
	h.ok("", "app", "delete", "hello")
	h.ok("", "deploy", p, "--binary", bin)
	if got := specSeq(); got != ahead+1 {
		t.Errorf("deploy after a deletion: spec sequence %d, want %d", got, ahead+1)
	}
	if got := entrySeq(); got != ahead+1 {
		t.Errorf("deploy after a deletion: entry sequence %d, want %d", got, ahead+1)
	}
}

// A value this key signed, stored again after a later one or after the
// app's deletion, is one nodes refuse: a deploy or rollback to the same
// spec must sign it anew rather than call it unchanged, or the operator
// who deploys an app back after a planted delete and replay, as SECURITY
// says to, leaves it down.
func TestDeployOverReplayedValueSignsAnew(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	ctx := context.Background()
	put := func(bucket string, v []byte) {
		t.Helper()
		if _, err := h.kv(bucket).Put(ctx, "hello", v); err != nil {
			t.Fatal(err)
		}
	}
	seqOf := func(v []byte) uint64 {
		t.Helper()
		seq, err := signing.Sequence(signing.Strip(v))
		if err != nil {
			t.Fatal(err)
		}
		return seq
	}
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t))
	v1, _ := h.get(names.AppsBucket, "hello")
	h.ok("", "deploy", h.file("hello3.toml", strings.Replace(helloSpec, "replicas = 2", "replicas = 3", 1)))
	v2, _ := h.get(names.AppsBucket, "hello")
	v2rev, err := h.kv(names.AppsBucket).Get(ctx, "hello")
	if err != nil {
		t.Fatal(err)
	}

	// v1 stored again over v2: it lends nothing (its binaries could be
	// older than v2's of the same version), and deploying v1's file with
	// its binary stores it anew.
	put(names.AppsBucket, v1)
	if r := h.fails(1, "", "deploy", p); !strings.Contains(r.err, "an earlier one this ctl's key signed, stored again over a later one") {
		t.Errorf("deploy without --binary over a replayed spec:\n%s", r.err)
	}
	r := h.ok("", "deploy", p, "--binary", elfBinary(t))
	if got, _ := h.get(names.AppsBucket, "hello"); bytes.Equal(got, v1) || seqOf(got) <= seqOf(v2) {
		t.Errorf("deploy over a replayed spec of the same file kept it (sequence %d, v2 had %d):\n%s", seqOf(got), seqOf(v2), r.out)
	}
	if !strings.Contains(r.err, "stored again") {
		t.Errorf("deploy over a replayed spec warned of nothing:\n%s", r.err)
	}
	v3, _ := h.get(names.AppsBucket, "hello")

	// The same for a rollback to the spec of the revision replayed.
	put(names.AppsBucket, v2)
	h.ok("", "app", "rollback", "hello", "--to", strconv.FormatUint(v2rev.Revision(), 10))
	if got, _ := h.get(names.AppsBucket, "hello"); bytes.Equal(got, v2) || seqOf(got) <= seqOf(v3) {
		t.Errorf("rollback over a replayed spec kept it (sequence %d, want above %d)", seqOf(got), seqOf(v3))
	}

	// A planted delete, then the last spec and route entry stored back:
	// deploying the app again stores both anew.
	h.ok("", "deploy", p)
	last, _ := h.get(names.AppsBucket, "hello")
	entry, _ := h.get(names.RoutesBucket, "hello")
	for _, b := range []string{names.AppsBucket, names.RoutesBucket} {
		if err := h.kv(b).Delete(ctx, "hello"); err != nil {
			t.Fatal(err)
		}
	}
	put(names.AppsBucket, last)
	put(names.RoutesBucket, entry)
	h.ok("", "deploy", p)
	if got, _ := h.get(names.AppsBucket, "hello"); bytes.Equal(got, last) {
		t.Error("deploy after a deletion and a replay kept the replayed spec")
	}
	if got, _ := h.get(names.RoutesBucket, "hello"); bytes.Equal(got, entry) {
		t.Error("deploy after a deletion and a replay kept the replayed route entry")
	}
}

// app restart builds on the stored spec only when nodes accept it: one
// this key signed before, stored again over a later one, restarted would
// be signed with a new sequence and run everywhere in place of the later.
func TestRestartRefusesReplayedSpec(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	path, _ := h.keygen("sign.key")
	h.useSigningKey(path)
	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	v1, _ := h.get(names.AppsBucket, "hello")
	h.ok("", "deploy", h.file("hello3.toml", strings.Replace(helloSpec, "replicas = 2", "replicas = 3", 1)))
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", v1); err != nil {
		t.Fatal(err)
	}
	r := h.run("", "app", "restart", "hello")
	if r.code == 0 || !strings.Contains(r.err, "stored again") {
		t.Errorf("restart of a replayed spec: exit %d\n%s%s", r.code, r.out, r.err)
	}
	if got, _ := h.get(names.AppsBucket, "hello"); !bytes.Equal(got, v1) {
		t.Errorf("restart of a replayed spec stored:\n%s", got)
	}
}
