package ctl

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

// build is a binary of this machine's arch that differs from every other
// build of the test by its suffix, and the object a deploy of version
// would store it as.
type build struct {
	path, object, sha256 string
	content              []byte
}

func (h *harness) build(version string, suffix byte) build {
	h.t.Helper()
	base, err := os.ReadFile(elfBinary(h.t))
	if err != nil {
		h.t.Fatal(err)
	}
	content := append(base, suffix)
	sum := sha256.Sum256(content)
	digest := hex.EncodeToString(sum[:])
	return build{
		path:    h.file(fmt.Sprintf("hello-%s", version), string(content)),
		object:  "hello/" + version + "/linux-" + runtime.GOARCH + "-" + digest[:12],
		sha256:  digest,
		content: content,
	}
}

// upload stores b as a deploy does before it stores its spec, and writes
// no spec: what another deploy, still running, has done so far.
func (h *harness) upload(b build) {
	h.t.Helper()
	obs, err := store.Objects(context.Background(), h.js, names.BinariesBucket, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	if _, err := obs.Put(context.Background(), jetstream.ObjectMeta{Name: b.object}, bytes.NewReader(b.content)); err != nil {
		h.t.Fatal(err)
	}
}

// fetch reads b's object of narun-binaries whole, as a node fetches it; it
// fails the test unless the object is there with b's bytes.
func (h *harness) fetch(b build) {
	h.t.Helper()
	obs, err := h.js.ObjectStore(context.Background(), names.BinariesBucket)
	if err != nil {
		h.t.Fatal(err)
	}
	got, err := obs.GetBytes(context.Background(), b.object)
	if err != nil {
		h.t.Fatalf("fetch %s as a node does: %v", b.object, err)
	}
	if !bytes.Equal(got, b.content) {
		h.t.Fatalf("%s holds %d bytes, not the %d of its build", b.object, len(got), len(b.content))
	}
}

// metaSequence is the sequence of the last metadata message of object in
// narun-binaries.
func (h *harness) metaSequence(object string) uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), "OBJ_"+names.BinariesBucket)
	if err != nil {
		h.t.Fatal(err)
	}
	m, err := s.GetLastMsgForSubject(context.Background(), store.ObjectMetaSubject(names.BinariesBucket, object))
	if err != nil {
		h.t.Fatalf("metadata of %s: %v", object, err)
	}
	return m.Sequence
}

// pruneGrace sets [ctl] prune_grace in the harness's configuration.
func (h *harness) pruneGrace(d string) {
	h.t.Helper()
	cfg, err := os.ReadFile(h.config)
	if err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(h.config, append(cfg, []byte("prune_grace = \""+d+"\"\n")...), 0o644); err != nil {
		h.t.Fatal(err)
	}
}

// Two deploys of one app run at once: the one that stores its spec first
// prunes, and must leave the build the other has uploaded but not yet
// pinned in a stored spec, or the other's nodes find no binary to fetch.
// A build left behind that way (the other deploy failed after its upload)
// is pruned once it is older than [ctl] prune_grace.
func TestPruneSparesBuildOfConcurrentDeploy(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", h.build("1.0.0", 0).path)

	other := h.build("1.0.1", 1)
	h.upload(other)
	uploaded := h.metaSequence(other.object)
	h.file("hello.toml", helloVersion("1.0.2", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.2", 2).path)
	if !h.hasObject(names.BinariesBucket, other.object) {
		t.Fatalf("the deploy of 1.0.2 pruned %s, which the deploy of 1.0.1 uploaded moments ago and has yet to pin", other.object)
	}

	// The other deploy now stores its spec, pinning the build it uploaded,
	// and its nodes fetch it.
	h.file("hello.toml", helloVersion("1.0.1", "/hello/"))
	h.ok("", "deploy", p, "--binary", other.path)
	raw, _ := h.get(names.AppsBucket, "hello")
	app, err := spec.Parse("hello", raw)
	if err != nil {
		t.Fatal(err)
	}
	if got := app.Binaries[runtime.GOARCH].Object; got != other.object {
		t.Fatalf("the deploy of 1.0.1 pins %s, want the build it uploaded, %s", got, other.object)
	}
	h.fetch(other)
	// It was stamped as it was reused: a prune counts its age from now.
	if seq := h.metaSequence(other.object); seq <= uploaded {
		t.Errorf("the deploy of 1.0.1 reused %s and left its metadata at sequence %d, as uploaded: a prune would count its age from the upload", other.object, seq)
	}

	// A build no deploy pinned: kept while young, deleted once older than
	// the grace (0 here, so at once), its metadata purged from the stream.
	left := h.build("1.0.3", 3)
	h.upload(left)
	h.file("hello.toml", helloVersion("1.0.4", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.4", 4).path)
	if !h.hasObject(names.BinariesBucket, left.object) {
		t.Fatalf("the deploy of 1.0.4 pruned %s, younger than the default prune_grace", left.object)
	}
	h.pruneGrace("0s")
	h.file("hello.toml", helloVersion("1.0.5", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.5", 5).path)
	if h.hasObject(names.BinariesBucket, left.object) {
		t.Fatalf("the deploy of 1.0.5 kept %s, which no spec pins and which is older than prune_grace = 0s", left.object)
	}
	s, err := h.js.Stream(context.Background(), "OBJ_"+names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLastMsgForSubject(context.Background(), store.ObjectMetaSubject(names.BinariesBucket, left.object)); err == nil {
		t.Errorf("the metadata of pruned %s is still in the stream", left.object)
	}
	// Every other build is pinned by the spec or a kept revision.
	for _, v := range []string{"1.0.0", "1.0.2", "1.0.4", "1.0.5"} {
		if b := h.build(v, v[len(v)-1]-'0'); !h.hasObject(names.BinariesBucket, b.object) {
			t.Errorf("%s, which a kept revision pins, was pruned", b.object)
		}
	}
}

// A deploy that reuses a build stamps it before storing its spec; a prune
// that read the build's metadata before the stamp finds it changed and
// deletes nothing, and one that reads it after counts its age from the
// stamp, however old the upload.
func TestPruneLosesToStamp(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	e.cfg.Ctl.PruneGrace = config.Duration(time.Hour)
	ctx := context.Background()
	b := h.build("1.0.0", 1)
	h.upload(b)

	read, info, err := e.objectMeta(ctx, names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.stampObject(ctx, names.BinariesBucket, b.object, b.sha256); err != nil {
		t.Fatalf("stamp: %v", err)
	}
	deleted, err := e.deleteObjectAt(ctx, names.BinariesBucket, read, info)
	if err != nil || deleted {
		t.Fatalf("delete by metadata read before the stamp: deleted %v, %v; want nothing deleted", deleted, err)
	}
	h.fetch(b)

	stamped, _, err := e.objectMeta(ctx, names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	if stamped.Sequence <= read.Sequence {
		t.Fatalf("stamp left the metadata at sequence %d (was %d)", stamped.Sequence, read.Sequence)
	}
	// An hour after the upload, on the server's clock, the stamp is
	// younger than the grace.
	if err := e.pruneObject(ctx, names.BinariesBucket, b.object, read.Time.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h.fetch(b)
	if err := e.pruneObject(ctx, names.BinariesBucket, b.object, stamped.Time.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	if h.hasObject(names.BinariesBucket, b.object) {
		t.Fatalf("%s, stamped an hour ago (prune_grace), was not pruned", b.object)
	}
}

// Deploys of apps that share a build run side by side (a fleet's specs
// applied by a script, four at a time), and each stamps the build: one
// that loses the race to another's stamp has its build stamped all the
// same, and goes on.
func TestConcurrentStampsOfOneBuild(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	b := h.build("1.0.0", 1)
	h.upload(b)
	before, _, err := h.env(io.Discard).objectMeta(context.Background(), names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	const deploys = 16
	errs := make(chan error, deploys)
	for range deploys {
		go func() {
			e := h.env(io.Discard)
			for range 4 {
				if err := e.stampObject(context.Background(), names.BinariesBucket, b.object, b.sha256); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range deploys {
		if err := <-errs; err != nil {
			t.Errorf("stamp beside %d others: %v", deploys-1, err)
		}
	}
	after, _, err := h.env(io.Discard).objectMeta(context.Background(), names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	if after.Sequence <= before.Sequence {
		t.Errorf("metadata still at sequence %d after the stamps", after.Sequence)
	}
	h.fetch(b)
}

// A build that a concurrent prune deleted between a deploy's check and
// its spec's write is uploaded again; a pin the deploy has no file for
// fails it, naming the object.
func TestStampUploadsPrunedBuildAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var stderr bytes.Buffer
	e := h.env(&stderr)
	ctx := context.Background()
	b := h.build("1.0.0", 1)
	h.upload(b)
	read, info, err := e.objectMeta(ctx, names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	if deleted, err := e.deleteObjectAt(ctx, names.BinariesBucket, read, info); err != nil || !deleted {
		t.Fatalf("delete: deleted %v, %v", deleted, err)
	}

	obs, err := e.objects(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	pins := &spec.App{Binaries: map[string]spec.Binary{runtime.GOARCH: {Object: b.object, SHA256: b.sha256}}}
	err = e.stampPins(ctx, &deployment{final: pins, obs: obs})
	if xe := (*cli.ExitError)(nil); !errors.As(err, &xe) || xe.Code != ExitNotFound || !strings.Contains(err.Error(), "nothing deployed: binary "+b.object+" for "+runtime.GOARCH+" was deleted") {
		t.Errorf("stamp of a pruned build the deploy has no file for: %v", err)
	}

	d := &deployment{final: pins, obs: obs, bins: []binaryFile{{Path: b.path, Arch: runtime.GOARCH, Size: int64(len(b.content)), SHA256: b.sha256, Object: b.object}}}
	if err := e.stampPins(ctx, d); err != nil {
		t.Fatalf("stamp of a pruned build of the deploy: %v", err)
	}
	h.fetch(b)
	if !strings.Contains(stderr.String(), b.object+" was deleted from "+names.BinariesBucket) {
		t.Errorf("upload again not reported: %q", stderr.String())
	}
}

// A deletion cut short between its marker and the purge of the content
// leaves the content in the stream, which no name reaches any more; the
// prune that finds the marker purges both.
func TestPruneFinishesDeletionCutShort(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	e := h.env(io.Discard)
	ctx := context.Background()
	b := h.build("1.0.0", 1)
	h.upload(b)
	_, info, err := e.objectMeta(ctx, names.BinariesBucket, b.object)
	if err != nil {
		t.Fatal(err)
	}
	info.Deleted = true
	marker, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	msg := nats.NewMsg(store.ObjectMetaSubject(names.BinariesBucket, b.object))
	msg.Header.Set(jetstream.MsgRollup, jetstream.MsgRollupSubject)
	msg.Data = marker
	if _, err := h.js.PublishMsg(ctx, msg); err != nil {
		t.Fatal(err)
	}
	if n := h.subjects("$O." + names.BinariesBucket + ".C.>"); n != 1 {
		t.Fatalf("%d content subjects before the prune, want the deleted object's", n)
	}

	if err := e.pruneObject(ctx, names.BinariesBucket, b.object, time.Now()); err != nil {
		t.Fatal(err)
	}
	if n := h.subjects("$O." + names.BinariesBucket + ".>"); n != 0 {
		t.Errorf("%d subjects of narun-binaries left after the prune, want none", n)
	}
}

// subjects counts the subjects of narun-binaries' stream that filter
// matches.
func (h *harness) subjects(filter string) int {
	h.t.Helper()
	return len(h.subjectMsgs(names.BinariesBucket, filter))
}

// subjectMsgs counts the messages of bucket's stream on each subject that
// filter matches.
func (h *harness) subjectMsgs(bucket, filter string) map[string]uint64 {
	h.t.Helper()
	s, err := h.js.Stream(context.Background(), "OBJ_"+bucket)
	if err != nil {
		h.t.Fatal(err)
	}
	info, err := s.Info(context.Background(), jetstream.WithSubjectFilter(filter))
	if err != nil {
		h.t.Fatal(err)
	}
	return info.State.Subjects
}

// A kept revision this ctl cannot parse (one a newer ctl stored, with a
// key this one does not know) may pin a build: a deploy's prune keeps
// every build such a revision names, as it cannot tell which it pins.
func TestPruneKeepsBuildsOfUnparsableRevision(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", h.build("1.0.0", 0).path)
	newer := h.build("1.0.9", 9)
	h.upload(newer)
	future := helloVersion("1.0.9", "/hello/") + "future_knob = true\n[binaries." + runtime.GOARCH + "]\nobject = \"" + newer.object + "\"\nsha256 = \"" + newer.sha256 + "\"\n"
	if _, _, err := spec.ParseStored("future", []byte(future)); err == nil {
		t.Fatal("the spec of a newer ctl parses: the test needs one that does not")
	}
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "hello", []byte(future)); err != nil {
		t.Fatal(err)
	}
	// Over a spec it cannot parse a deploy prunes nothing; the next one
	// prunes, with that spec a kept revision.
	h.file("hello.toml", helloVersion("1.0.1", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.1", 1).path)
	if !h.hasObject(names.BinariesBucket, newer.object) {
		t.Fatalf("the deploy over the spec it cannot parse pruned %s, which that spec pins", newer.object)
	}
	h.file("hello.toml", helloVersion("1.0.2", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.2", 2).path)
	if !h.hasObject(names.BinariesBucket, newer.object) {
		t.Errorf("the deploy pruned %s, which a kept revision it cannot parse names", newer.object)
	}
	// So does another app's current spec it cannot parse; a build no
	// spec names goes.
	named, gone := h.build("1.0.3", 3), h.build("1.0.3", 5)
	h.upload(named)
	h.upload(gone)
	other := strings.ReplaceAll(future, "1.0.9/linux-"+runtime.GOARCH+"-"+newer.sha256[:12], "1.0.3/linux-"+runtime.GOARCH+"-"+named.sha256[:12])
	if _, err := h.kv(names.AppsBucket).Put(context.Background(), "other", []byte(other)); err != nil {
		t.Fatal(err)
	}
	h.file("hello.toml", helloVersion("1.0.4", "/hello/"))
	h.ok("", "deploy", p, "--binary", h.build("1.0.4", 4).path)
	if !h.hasObject(names.BinariesBucket, named.object) {
		t.Errorf("the deploy pruned %s, which another app's spec it cannot parse names", named.object)
	}
	if h.hasObject(names.BinariesBucket, gone.object) {
		t.Errorf("the deploy kept %s, which no spec names", gone.object)
	}
}

// mentioned counts a name that a spec's text holds whole, in whatever form
// TOML may write it (a basic or literal string, a bare or dotted key), and
// not one that is only part of a longer name or word: a secret "db" is not
// named by "mydb" or "db-password", nor a file "conf" by "config".
func TestMentionedMatchesWholeNames(t *testing.T) {
	for _, tc := range []struct {
		text  string
		names []string
		want  []string
	}{
		{`name = "db"`, []string{"db"}, []string{"db"}},
		{`name = 'db'`, []string{"db"}, []string{"db"}},
		{`name = """db"""`, []string{"db"}, []string{"db"}},
		{"[secrets.db]\nenv = \"X\"", []string{"db"}, []string{"db"}},
		{`secrets = ["db", "tls.key"]`, []string{"db", "tls.key", "tls"}, []string{"db", "tls.key", "tls"}},
		{"db", []string{"db"}, []string{"db"}},
		{`object = "hello/1-amd64-0a1b"`, []string{"hello/1-amd64-0a1b"}, []string{"hello/1-amd64-0a1b"}},
		{`name = "mydb"`, []string{"db"}, nil},
		{`name = "db-password"`, []string{"db", "password"}, nil},
		{`name = "db_url"`, []string{"db"}, nil},
		{`object = "config"`, []string{"conf"}, nil},
		{`sha256 = "3db9"`, []string{"db"}, nil},
		{`env = "DB"`, []string{"db"}, nil},
	} {
		if got := mentioned([]byte(tc.text), tc.names); !slices.Equal(got, tc.want) {
			t.Errorf("mentioned(%q, %q) = %q, want %q", tc.text, tc.names, got, tc.want)
		}
	}
}
