package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// kvappServer starts a NATS server where the service kvapp answers "kv:"
// and the path, and returns a connection to it and a new signing key.
func kvappServer(t *testing.T) (*nats.Conn, *signing.Key) {
	t.Helper()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t)
	serveOn(t, natstest.Connect(t, srv), consumerConfig("kvapp"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "kv:"+r.URL.Path)
	}))
	return natstest.Connect(t, srv), key
}

// A signed route entry is served by gateways with and without trusted
// keys; an unsigned one only by those without, and another app's unsigned
// entry costs a gateway with trusted keys nothing of the signed ones. A
// reload that sets trusted_keys checks the entries already loaded.
func TestSignedRouteEntries(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)

	var strictLog testutil.LogBuffer
	strictCfg := gwConfig()
	strictCfg.TrustedKeys = []string{key.Public()}
	strict := "http://" + startRunLogged(t, nc, strictCfg, "", slog.New(slog.NewTextHandler(&strictLog, nil))).addrs["http"]
	path := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, path, "[gateway]\n")
	open := startRun(t, nc, gwConfig(), path)
	openBase := "http://" + open.addrs["http"]

	ctx := context.Background()
	kv := routesKV(t, nc)
	// The unsigned entry goes first: once the signed one is served, the
	// gateway has been through both.
	if _, err := kv.Put(ctx, "plain", []byte(`[{"path":"/plain/","service":"kvapp"}]`)); err != nil {
		t.Fatal(err)
	}
	if _, err := kv.Put(ctx, "signed", key.Sign([]byte(`[{"path":"/signed/","service":"kvapp"}]`))); err != nil {
		t.Fatal(err)
	}
	for _, base := range []string{strict, openBase} {
		testutil.Eventually(t, 15*time.Second, "signed entry served by "+base, func() bool {
			code, body := get(t, base+"/signed/x")
			return code == 200 && body == "kv:/signed/x"
		})
	}
	if code, body := get(t, openBase+"/plain/x"); code != 200 || body != "kv:/plain/x" {
		t.Errorf("gateway without trusted keys, unsigned entry: %d %q", code, body)
	}
	if code, _ := get(t, strict+"/plain/x"); code != 404 {
		t.Errorf("gateway with trusted keys serves an unsigned entry: %d", code)
	}
	refused := func(log string) bool {
		for line := range strings.Lines(log) {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, "app=plain") && strings.Contains(line, "not signed") {
				return true
			}
		}
		return false
	}
	if !refused(strictLog.String()) {
		t.Errorf("refusal of the unsigned entry not logged:\n%s", strictLog.String())
	}

	writeFile(t, path, "[gateway]\ntrusted_keys = [\""+key.Public()+"\"]\n")
	if err := open.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, openBase+"/plain/x"); code != 404 {
		t.Errorf("unsigned entry served after a reload set trusted_keys: %d", code)
	}
	if code, body := get(t, openBase+"/signed/x"); code != 200 || body != "kv:/signed/x" {
		t.Errorf("signed entry after a reload set trusted_keys: %d %q", code, body)
	}
}

func TestBadGatewayTrustedKey(t *testing.T) {
	t.Parallel()
	cfg := gwConfig()
	cfg.TrustedKeys = []string{"narun-ed25519:short"}
	_, err := New(Options{Config: cfg, Conn: natstest.Connect(t, natstest.Start(t))})
	if err == nil || !strings.Contains(err.Error(), "gateway.trusted_keys[0]") {
		t.Errorf("New with a bad trusted key: %v, want an error naming gateway.trusted_keys[0]", err)
	}
}

// narun up's node key is trusted without a line in the file: a reload of
// a file that names no trusted key keeps checking signatures with it.
func TestNodeKeysSurviveReload(t *testing.T) {
	t.Parallel()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "narun.toml")
	writeFile(t, path, "[gateway]\n")
	g, err := New(Options{Config: gwConfig(), Conn: natstest.Connect(t, natstest.Start(t)), ConfigPath: path, ConfigContent: loaded(t, path), NodeKeys: []string{key.Public()}})
	if err != nil {
		t.Fatal(err)
	}
	if !g.signatures.Enabled() {
		t.Fatal("node key not trusted at start")
	}
	if err := g.Reload(); err != nil {
		t.Fatal(err)
	}
	if _, err := g.signatures.Verify([]byte("[]\n")); err == nil {
		t.Error("after a reload, an unsigned entry passes: the node key was dropped")
	}
}

// Once trusted keys are set, the routes cache still holds the unsigned
// entries of before: they are left out quietly, with one line naming them,
// not refused as errors, and the signed copies narun-routes holds are
// served once it answers.
func TestUnsignedCacheEntriesLeftOutQuietly(t *testing.T) {
	t.Parallel()
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	serveOn(t, nc, consumerConfig("old"), http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "served")
	}))
	entry := []byte(`[{"path":"/old/","service":"old"}]`)
	cache := filepath.Join(t.TempDir(), "routes.json")
	b, err := json.Marshal(map[string][]byte{"old": entry})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cache, string(b))
	if _, err := routesKV(t, nc).Put(context.Background(), "old", key.Sign(entry)); err != nil {
		t.Fatal(err)
	}

	var logs testutil.LogBuffer
	cfg := gwConfig()
	cfg.TrustedKeys = []string{key.Public()}
	r := startRunOptions(t, Options{Config: cfg, Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	testutil.Eventually(t, 20*time.Second, "the signed copy served", func() bool {
		code, body := get(t, "http://"+r.addrs["http"]+"/old/")
		return code == 200 && body == "served"
	})
	if strings.Contains(logs.String(), "level=ERROR") {
		t.Errorf("an unsigned cache entry logged as an error:\n%s", logs.String())
	}
	if !strings.Contains(logs.String(), "routes cache entries the trusted keys do not sign are left out until narun-routes answers") || !strings.Contains(logs.String(), "apps=[old]") {
		t.Errorf("the unsigned cache entries are not named:\n%s", logs.String())
	}
}

// A signed entry names its app: one signed for alpha and planted under
// beta's key is refused there, with the reason logged, while an entry of
// an earlier ctl, which names no app, is still served with a warning.
func TestRouteEntryBoundToItsKey(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)
	var logs testutil.LogBuffer
	cfg := gwConfig()
	cfg.TrustedKeys = []string{key.Public()}
	base := "http://" + startRunLogged(t, nc, cfg, "", slog.New(slog.NewTextHandler(&logs, nil))).addrs["http"]

	entry := func(app, path string) []byte {
		b, err := EncodeEntry(app, []config.Route{{Path: path, Service: "kvapp"}}, 1)
		if err != nil {
			t.Fatal(err)
		}
		return key.Sign(b)
	}
	ctx := context.Background()
	kv := routesKV(t, nc)
	// The refused and the legacy entries go first: once alpha's own is
	// served, the gateway has been through them.
	for k, v := range map[string][]byte{
		"beta":   entry("alpha", "/planted/"),
		"legacy": key.Sign([]byte(`[{"path":"/legacy/","service":"kvapp"}]`)),
	} {
		if _, err := kv.Put(ctx, k, v); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := kv.Put(ctx, "alpha", entry("alpha", "/alpha/")); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "alpha's own entry served", func() bool {
		code, _ := get(t, base+"/alpha/x")
		return code == 200
	})
	if code, _ := get(t, base+"/planted/x"); code != 404 {
		t.Errorf("an entry signed for alpha served under beta: %d", code)
	}
	if code, body := get(t, base+"/legacy/x"); code != 200 || body != "kv:/legacy/x" {
		t.Errorf("an entry of an earlier ctl (no app named): %d %q", code, body)
	}
	var refused, warned bool
	for line := range strings.Lines(logs.String()) {
		refused = refused || strings.Contains(line, "level=ERROR") && strings.Contains(line, "app=beta") && strings.Contains(line, `names app \"alpha\"`)
		warned = warned || strings.Contains(line, "level=WARN") && strings.Contains(line, "app=legacy") && strings.Contains(line, "does not name its app")
	}
	if !refused {
		t.Errorf("refusal of the planted entry not logged with its reason:\n%s", logs.String())
	}
	if !warned {
		t.Errorf("the entry naming no app served without a warning:\n%s", logs.String())
	}
}

// An entry signed before, stored again, is refused and leaves the app's
// routes as they are: an earlier version, and an app's entry after the
// app was deleted. The gateway with a routes cache remembers the sequence
// across a restart.
func TestRouteEntryReplayRefused(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)
	cfg := gwConfig()
	cfg.TrustedKeys = []string{key.Public()}
	cache := filepath.Join(t.TempDir(), "routes.json")
	var logs testutil.LogBuffer
	start := func(log *testutil.LogBuffer) *running {
		return startRunOptions(t, Options{Config: cfg, Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(log, nil))})
	}
	gw := start(&logs)
	base := "http://" + gw.addrs["http"]
	entry := func(path string, seq uint64) []byte { return webEntry(t, key, path, seq) }
	served := func(base, path string) bool {
		code, _ := get(t, base+path)
		return code == 200
	}
	refused := func(logs *testutil.LogBuffer, why string) bool {
		for line := range strings.Lines(logs.String()) {
			if strings.Contains(line, "level=ERROR") && strings.Contains(line, "routes entry refused") && strings.Contains(line, "app=web") &&
				strings.Contains(line, why) {
				return true
			}
		}
		return false
	}
	ctx := context.Background()
	kv := routesKV(t, nc)
	put := func(v []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, "web", v); err != nil {
			t.Fatal(err)
		}
	}

	v1, v2 := entry("/v1/", 100), entry("/v2/", 200)
	put(v2)
	testutil.Eventually(t, 15*time.Second, "v2 served", func() bool { return served(base, "/v2/") })
	put(v1)
	testutil.Eventually(t, 15*time.Second, "v1 refused", func() bool { return refused(&logs, "sequence 100, below 200") })
	if !served(base, "/v2/") || served(base, "/v1/") {
		t.Error("an earlier entry stored again replaced the routes")
	}
	// The same value read again is accepted; a later one too.
	v3 := entry("/v3/", 300)
	put(v2)
	put(v3)
	testutil.Eventually(t, 15*time.Second, "v3 served", func() bool { return served(base, "/v3/") })
	if refused(&logs, "sequence 200") {
		t.Errorf("v2 stored again before v3 was refused:\n%s", logs.String())
	}

	if err := kv.Delete(ctx, "web"); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "deleted app's routes gone", func() bool { return !served(base, "/v3/") })
	// Its last entry too.
	put(v3)
	testutil.Eventually(t, 15*time.Second, "deleted app's last entry refused", func() bool {
		return refused(&logs, "sequence 300, that of the value \\\"web\\\" held when it was deleted")
	})
	if served(base, "/v3/") {
		t.Error("a deleted app's last entry served again")
	}

	gw.stop()
	// Put back for the cleanup, which waits for it too.
	gw.done <- <-gw.done
	var again testutil.LogBuffer
	base = "http://" + start(&again).addrs["http"]
	testutil.Eventually(t, 15*time.Second, "the earlier entry refused after a restart", func() bool { return refused(&again, "held when it was deleted") })
	if served(base, "/v3/") {
		t.Error("after a restart, the deleted app's earlier entry is served")
	}
}

// A reload that sets trusted_keys takes the sequences of the entries it
// checks again as accepted: an earlier entry stored next is refused, as
// it is by a gateway that had the keys when it read them, and a restart
// keeps them once the routes cache holds their entries.
func TestReloadSettingTrustedKeysKeepsOrder(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)
	dir := t.TempDir()
	path, cache := filepath.Join(dir, "narun.toml"), filepath.Join(dir, "routes.json")
	writeFile(t, path, "[gateway]\n")
	var logs testutil.LogBuffer
	gw := startRunOptions(t, Options{Config: gwConfig(), Conn: nc, ConfigPath: path, ConfigContent: loaded(t, path), RoutesCache: cache,
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	base := "http://" + gw.addrs["http"]
	entry := func(path string, seq uint64) []byte { return webEntry(t, key, path, seq) }
	ctx := context.Background()
	kv := routesKV(t, nc)
	if _, err := kv.Put(ctx, "web", entry("/v2/", 200)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "v2 served", func() bool { code, _ := get(t, base+"/v2/"); return code == 200 })

	writeFile(t, path, "[gateway]\ntrusted_keys = [\""+key.Public()+"\"]\n")
	if err := gw.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	if seqs, err := os.ReadFile(cache + orderSuffix); !strings.Contains(string(seqs), `"web":{"sequence":200,`) {
		t.Errorf("sequences kept after the reload: %s (%v), want web's 200", seqs, err)
	}
	if _, err := kv.Put(ctx, "web", entry("/v1/", 100)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "v1 refused", func() bool {
		return strings.Contains(logs.String(), "sequence 100, below 200")
	})
	if code, _ := get(t, base+"/v1/"); code == 200 {
		t.Error("an earlier entry stored after a reload set trusted_keys is served")
	}
	if code, _ := get(t, base+"/v2/"); code != 200 {
		t.Errorf("the routes served before the earlier entry was stored: %d", code)
	}
}

// The sequence of a signed entry is kept in the file beside the routes
// cache only once the cache holds the entry: kept first, a power cut
// between the two writes, or a cache write that fails on its own (a full
// disk), left the file ahead of the cache, and a restart without NATS
// refused the cached entry and answered 404 for an app its runner starts
// from its cached spec. The running gateway still refuses what is below
// the entry it could not cache.
func TestSequenceNotKeptAheadOfTheRoutesCache(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)
	cfg := gwConfig()
	cfg.TrustedKeys = []string{key.Public()}
	cache := filepath.Join(t.TempDir(), "routes.json")
	var logs testutil.LogBuffer
	gw := startRunOptions(t, Options{Config: cfg, Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	base := "http://" + gw.addrs["http"]
	entry := func(path string, seq uint64) []byte { return webEntry(t, key, path, seq) }
	ctx := context.Background()
	kv := routesKV(t, nc)
	put := func(v []byte) {
		t.Helper()
		if _, err := kv.Put(ctx, "web", v); err != nil {
			t.Fatal(err)
		}
	}

	put(entry("/v1/", 100))
	testutil.Eventually(t, 15*time.Second, "v1 cached and its sequence kept", func() bool {
		b, _ := os.ReadFile(cache)
		seqs, _ := os.ReadFile(cache + orderSuffix)
		return strings.Contains(string(b), `"web"`) && strings.Contains(string(seqs), `"web":{"sequence":100,`)
	})

	// A non-empty directory where the cache goes fails every write of it,
	// as root too; the cache as such a write leaves it, holding v1, is put
	// back before the restart.
	kept := cache + ".kept"
	if err := os.Rename(cache, kept); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(cache, "full"), 0o700); err != nil {
		t.Fatal(err)
	}
	put(entry("/v2/", 200))
	testutil.Eventually(t, 15*time.Second, "v2 served, its caching failed", func() bool {
		code, _ := get(t, base+"/v2/")
		return code == 200 && strings.Contains(logs.String(), "routes cache not written")
	})
	put(entry("/v15/", 150))
	testutil.Eventually(t, 15*time.Second, "an entry below the one not cached refused", func() bool {
		return strings.Contains(logs.String(), "sequence 150, below 200")
	})
	if code, _ := get(t, base+"/v2/"); code != 200 {
		t.Errorf("v2 after an earlier entry was stored again: %d, want it served", code)
	}
	gw.stop()
	// Put back for the cleanup, which waits for it too.
	gw.done <- <-gw.done

	if err := os.RemoveAll(cache); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(kept, cache); err != nil {
		t.Fatal(err)
	}
	// Back alone: no NATS answers. A route served answers 503 for the
	// connection; one refused, 404.
	away, err := nats.Connect("nats://"+testutil.FreeAddr(t), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(away.Close)
	var again testutil.LogBuffer
	restarted := startRunOptions(t, Options{Config: cfg, Conn: away, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&again, nil))})
	testutil.Eventually(t, 15*time.Second, "the routes cache read", func() bool {
		return strings.Contains(again.String(), "serving deployed apps' routes as narun-routes last had them")
	})
	if code, body := get(t, "http://"+restarted.addrs["http"]+"/v1/"); code != http.StatusServiceUnavailable {
		t.Errorf("cached v1 after a restart without NATS: %d %q, want 503 (routed, NATS away); log:\n%s", code, body, again.String())
	}
}

// The line that says the cache's routes are served counts the apps whose
// routes are, not the entries read: one refused (here a route no request
// can reach) is left out of it.
func TestCachedRoutesCountOnlyThoseServed(t *testing.T) {
	t.Parallel()
	nc := natstest.Connect(t, natstest.Start(t))
	cache := filepath.Join(t.TempDir(), "routes.json")
	b, err := json.Marshal(map[string][]byte{
		"ok":   []byte(`[{"path":"/ok/","service":"ok"}]`),
		"dead": []byte(`[{"path":"/a/../b","service":"dead"}]`),
	})
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, cache, string(b))
	var logs testutil.LogBuffer
	startRunOptions(t, Options{Config: gwConfig(), Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const served = "serving deployed apps' routes as narun-routes last had them"
	testutil.Eventually(t, 20*time.Second, "the cache read", func() bool { return strings.Contains(logs.String(), served) })
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, served) && !strings.Contains(line, " apps=1") {
			t.Errorf("want apps=1, the one app whose routes are served:\n%s", line)
		}
	}
}

// webEntry is app web's narun-routes entry of one route, path to kvapp,
// signed by key with seq.
func webEntry(t *testing.T, key *signing.Key, path string, seq uint64) []byte {
	t.Helper()
	b, err := EncodeEntry("web", []config.Route{{Path: path, Service: "kvapp"}}, seq)
	if err != nil {
		t.Fatal(err)
	}
	return key.Sign(b)
}

// An entry the gateway refuses (signed by a key it does not trust, not
// signed, or not valid JSON) leaves the app's routes as they are, as the
// runner leaves the instances of a refused spec running: writing such an
// entry, which any app can on a default device, must not take a healthy
// app's routes away. The routes cache keeps the entry last accepted, so a
// restart without NATS serves it too.
func TestRefusedRouteEntryKeepsRoutes(t *testing.T) {
	t.Parallel()
	untrusted, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		// value is the entry refused, why part of the reason logged.
		value func(key *signing.Key) []byte
		why   string
	}{
		{"untrusted key", func(*signing.Key) []byte { return webEntry(t, untrusted, "/v2/", 200) }, "which this node does not trust"},
		{"unsigned bytes", func(*signing.Key) []byte { return []byte("\x00not an entry") }, "not signed"},
		{"signed bytes not JSON", func(key *signing.Key) []byte { return key.Sign([]byte("{not json")) }, "bad JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			nc, key := kvappServer(t)
			cfg := gwConfig()
			cfg.TrustedKeys = []string{key.Public()}
			cache := filepath.Join(t.TempDir(), "routes.json")
			var logs testutil.LogBuffer
			gw := startRunOptions(t, Options{Config: cfg, Conn: nc, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			base := "http://" + gw.addrs["http"]
			ctx := context.Background()
			kv := routesKV(t, nc)
			v1 := webEntry(t, key, "/v1/", 100)
			if _, err := kv.Put(ctx, "web", v1); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 15*time.Second, "v1 served and cached", func() bool {
				code, _ := get(t, base+"/v1/x")
				b, _ := os.ReadFile(cache)
				return code == 200 && strings.Contains(string(b), `"web"`)
			})

			if _, err := kv.Put(ctx, "web", tc.value(key)); err != nil {
				t.Fatal(err)
			}
			testutil.Eventually(t, 15*time.Second, "the entry refused", func() bool {
				for line := range strings.Lines(logs.String()) {
					if strings.Contains(line, "level=ERROR") && strings.Contains(line, "app=web") && strings.Contains(line, tc.why) {
						return true
					}
				}
				return false
			})
			if code, body := get(t, base+"/v1/x"); code != 200 || body != "kv:/v1/x" {
				t.Errorf("v1 after a refused entry: %d %q, want 200 from kvapp", code, body)
			}
			if code, _ := get(t, base+"/v2/x"); code != 404 {
				t.Errorf("the refused entry's route: %d, want 404", code)
			}
			// The cache is written after each update is applied, so a
			// cancelled Run has written what the refused entry left.
			gw.stop()
			// Put back for the cleanup, which waits for it too.
			gw.done <- <-gw.done
			var cached map[string][]byte
			if b, err := os.ReadFile(cache); err != nil || json.Unmarshal(b, &cached) != nil || !bytes.Equal(cached["web"], v1) {
				t.Errorf("routes cache after a refused entry: %q (%v), want web's v1", cached["web"], err)
			}

			// Back alone: no NATS answers. A route served answers 503 for
			// the connection; one not served, 404.
			away, err := nats.Connect("nats://"+testutil.FreeAddr(t), nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(away.Close)
			var again testutil.LogBuffer
			restarted := startRunOptions(t, Options{Config: cfg, Conn: away, RoutesCache: cache, Logger: slog.New(slog.NewTextHandler(&again, nil))})
			testutil.Eventually(t, 15*time.Second, "the routes cache read", func() bool {
				return strings.Contains(again.String(), "serving deployed apps' routes as narun-routes last had them")
			})
			if code, body := get(t, "http://"+restarted.addrs["http"]+"/v1/x"); code != http.StatusServiceUnavailable {
				t.Errorf("cached v1 after a restart without NATS: %d %q, want 503 (routed, NATS away); log:\n%s", code, body, again.String())
			}
		})
	}
}

// An entry refused for its key is served once a reload trusts that key,
// as a runner restarted with the key runs the spec it refused: the
// routes cache keeps only the entry accepted before, so the reload reads
// narun-routes again.
func TestRefusedRouteEntryServedOnceItsKeyIsTrusted(t *testing.T) {
	t.Parallel()
	nc, key := kvappServer(t)
	other, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "narun.toml")
	var logs testutil.LogBuffer
	gw := startRunLogged(t, nc, writeConfig(t, path, "[gateway]\ntrusted_keys = [\""+key.Public()+"\"]\n"), path, slog.New(slog.NewTextHandler(&logs, nil)))
	base := "http://" + gw.addrs["http"]
	ctx := context.Background()
	kv := routesKV(t, nc)
	if _, err := kv.Put(ctx, "web", webEntry(t, key, "/v1/", 100)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "v1 served", func() bool { code, _ := get(t, base+"/v1/x"); return code == 200 })
	if _, err := kv.Put(ctx, "web", webEntry(t, other, "/v2/", 200)); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "v2 refused", func() bool {
		return strings.Contains(logs.String(), "which this node does not trust")
	})

	writeFile(t, path, "[gateway]\ntrusted_keys = [\""+key.Public()+"\", \""+other.Public()+"\"]\n")
	if err := gw.gw.Reload(); err != nil {
		t.Fatal(err)
	}
	testutil.Eventually(t, 15*time.Second, "v2 served once its key is trusted", func() bool {
		code, _ := get(t, base+"/v2/x")
		return code == 200
	})
	if code, _ := get(t, base+"/v1/x"); code != 404 {
		t.Errorf("v1 after v2 replaced it: %d, want 404", code)
	}
}
