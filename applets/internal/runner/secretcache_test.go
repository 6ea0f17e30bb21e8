package runner

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/atomicfile"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
)

// stalledRead is narun-secrets for a fetch whose first read is answered
// and then held until release closes: the store is changed meanwhile, as
// by a delete that lands while the answer is on its way.
type stalledRead struct {
	jetstream.KeyValue
	once    *sync.Once
	read    chan struct{}
	release chan struct{}
}

func (s stalledRead) Get(ctx context.Context, key string) (jetstream.KeyValueEntry, error) {
	e, err := s.KeyValue.Get(ctx, key)
	s.once.Do(func() {
		close(s.read)
		<-s.release
	})
	return e, err
}

// A secret deleted while a fetch of it is on its way, and whose cached
// copy the resync removed meanwhile, is not written back by that fetch:
// the copy would serve the revoked secret at the next restart while NATS
// is away.
func TestSecretDeletedDuringFetchStaysUncached(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	ctx := context.Background()
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	read, release := make(chan struct{}), make(chan struct{})
	stalled := &resources{secrets: stalledRead{online.secrets, &sync.Once{}, read, release}}
	fetched := make(chan error, 1)
	go func() {
		_, err := r.secret(ctx, stalled, "token")
		fetched <- err
	}()
	<-read
	if err := c.secrets.Purge(ctx, "token"); err != nil {
		t.Fatal(err)
	}
	r.dropDeletedSecrets(ctx, online)
	close(release)
	if err := <-fetched; err == nil || !strings.Contains(err.Error(), "is not set") {
		t.Errorf("fetch that read the secret before its delete: %v, want not set", err)
	}
	if v, err := r.secret(ctx, nil, "token"); !errors.Is(err, errOffline) {
		t.Fatalf("offline after the delete: %q, %v; want no cached copy", v, err)
	}
}

// A cached secret sealed with a key the key file no longer holds (a key
// file replaced by one with only the new key, before this node fetched the
// secrets sealed again) is not damaged: it is kept while NATS is away,
// and opens once the key file holds its key again.
func TestCachedSecretKeptWhileItsKeyIsMissing(t *testing.T) {
	t.Parallel()
	_, r, online := secretRunner(t)
	ctx := context.Background()
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	old, err := os.ReadFile(r.keys.path)
	if err != nil {
		t.Fatal(err)
	}
	other, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	if err := atomicfile.Write(r.keys.path, []byte(other+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = r.secret(ctx, nil, "token")
	if !errors.Is(err, secrets.ErrNoKey) || errors.Is(err, supervisor.ErrPermanent) {
		t.Errorf("offline, its key not in the key file: %v; want a retryable error saying the key is missing", err)
	}
	if err := atomicfile.Write(r.keys.path, old, 0o600); err != nil {
		t.Fatal(err)
	}
	if v, err := r.secret(ctx, nil, "token"); err != nil || string(v) != "v1" {
		t.Errorf("offline, its key back in the key file: %q, %v; want the cached copy", v, err)
	}
}

// A secret deleted (revoked) while its instance runs does not stay, in
// plain, in the file the instance was given, once a restart of the
// instance finds it deleted: the instance then waits with no process
// that could read it, for as long as the app is deployed.
func TestRevokedSecretFileGoesAtRestart(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	keyFile := writeKeyFile(t, sealSecret(t, c, "token", "v1"))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	c.deploy(t, "vault", "1.0.0", probeBin, "[[secrets]]\nname = \"token\"\nfile = \"conf/token\"\n")
	in := tr.wait(t, "vault", "healthy", allIn(1, state.Healthy))[0]
	placed := filepath.Join(tr.instancesDir(), "vault", in.ID, "conf", "token")
	if _, err := os.Stat(placed); err != nil {
		t.Fatalf("secret placed for the running instance: %v", err)
	}
	if err := c.secrets.Purge(context.Background(), "token"); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(in.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "vault", "restart refused for the deleted secret", func(l []state.Instance) bool {
		return len(l) == 1 && l[0].ID == in.ID && strings.Contains(l[0].Reason, "is not set")
	})
	if _, err := os.Lstat(placed); !os.IsNotExist(err) {
		t.Errorf("the revoked secret's file in the waiting instance: %v, want it removed", err)
	}
}

// errRefused is what a NATS server answers a login that may not read a
// bucket.
var errRefused = errors.New(`nats: permissions violation for subscription to "$JS.API.DIRECT.GET.KV_narun-secrets.>"`)

// refusedSecrets is narun-secrets that NATS reaches but will not read.
type refusedSecrets struct{ jetstream.KeyValue }

func (refusedSecrets) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return nil, errRefused
}

// refusedFiles is narun-files that NATS reaches but will not read.
type refusedFiles struct{ jetstream.ObjectStore }

func (refusedFiles) GetInfo(context.Context, string, ...jetstream.GetObjectInfoOpt) (*jetstream.ObjectInfo, error) {
	return nil, errRefused
}

// A secret or file that the store does not give and that has no cached
// copy fails its start with the store's error: "nats not reachable" sent
// the operator looking at a connection that worked, away from the login
// that may not read the bucket.
func TestFetchErrorNamedWithoutCachedCopy(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	ctx := context.Background()
	res := &resources{secrets: refusedSecrets{online.secrets}, files: refusedFiles{c.files}}
	if _, err := r.secret(ctx, res, "token"); !errors.Is(err, errRefused) {
		t.Errorf("secret: %v, want the store's error", err)
	}
	f := spec.File{Object: "conf", Path: "x"}
	if err := r.placeFile(ctx, res, f, "", t.TempDir()); !errors.Is(err, errRefused) {
		t.Errorf("file: %v, want the store's error", err)
	}
}

// behind is a replica of narun-secrets that has not applied a delete yet:
// it gives the entry the leader held before.
type behind struct {
	jetstream.KeyValue
	before jetstream.KeyValueEntry
}

func (b behind) Get(context.Context, string) (jetstream.KeyValueEntry, error) {
	return b.before, nil
}

// A replica behind its leader gives a deleted secret's earlier value to a
// fetch made after the runner removed the cached copy for that delete:
// it is not used, nor cached again. Set again, the secret serves.
func TestSecretFromReplicaBehindDeleteRefused(t *testing.T) {
	t.Parallel()
	c, r, online := secretRunner(t)
	ctx := context.Background()
	before, err := c.secrets.Get(ctx, "token")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.secret(ctx, online, "token"); err != nil {
		t.Fatal(err)
	}
	if err := c.secrets.Purge(ctx, "token"); err != nil {
		t.Fatal(err)
	}
	r.dropDeletedSecrets(ctx, online)
	if v, err := r.secret(ctx, &resources{secrets: behind{online.secrets, before}}, "token"); !errors.Is(err, errUnset) {
		t.Errorf("from a replica behind the delete: %q, %v; want not set", v, err)
	}
	if v, err := r.secret(ctx, nil, "token"); !errors.Is(err, errOffline) {
		t.Errorf("offline after the delete: %q, %v; want no cached copy", v, err)
	}

	keys, err := os.ReadFile(r.keys.path)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := secrets.ParseRing(keys)
	if err != nil {
		t.Fatal(err)
	}
	if err := secrets.Put(ctx, c.secrets, ring, "token", []byte("v2")); err != nil {
		t.Fatal(err)
	}
	if v, err := r.secret(ctx, online, "token"); err != nil || string(v) != "v2" {
		t.Errorf("set again: %q, %v; want v2", v, err)
	}
}

// A secret sealed with a key this node's key file lacks fails its starts
// until the key arrives, as a missing key file does: the file is read again
// at each attempt, so copying the key there is enough. The reason is what
// the operator reads, so it names the node's key file and the ways out.
func TestSecretWithoutItsKeyWaitsForIt(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	key := sealSecret(t, c, "token", "sealed")
	other, err := secrets.NewKey()
	if err != nil {
		t.Fatal(err)
	}
	keyFile := writeKeyFile(t, []byte(other+"\n"))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	c.deploy(t, "late", "1.0.0", probeBin, "args = [\"secret\"]\n[[secrets]]\nname = \"token\"\nenv = \"TOKEN\"\n")
	var reason string
	tr.wait(t, "late", "a start refused for the key the key file lacks", func(ins []state.Instance) bool {
		if len(ins) == 1 && strings.Contains(ins[0].Reason, "not in the key file") {
			reason = ins[0].Reason
			return true
		}
		return false
	})
	for _, want := range []string{keyFile, "copy", "narun ctl secret set token"} {
		if !strings.Contains(reason, want) {
			t.Errorf("reason %q does not say %q", reason, want)
		}
	}
	if err := atomicfile.Write(keyFile, key, 0o600); err != nil {
		t.Fatal(err)
	}
	tr.wait(t, "late", "healthy once the key file holds the key", allIn(1, state.Healthy))
}
