package nats_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats/natstest"
)

// A user nkey for tests: the seed logs in, the public key is configured.
const (
	appNKeySeed = "SUAJE2BOBVXX3AB2PCWIRLKCBBYRKZJ3IZ3TWUUZRQILQ7FCT7OC7F23D4"
	appNKey     = "UABHOBCPFSAX5WPKFQK7BORSZBW6BI6KL5367VLRLCET7Y3ZGSKLIRQY"
)

// roleCluster runs `narun nats` with an admin user (no role: the default),
// an app user and an app nkey, and opens narun's buckets and log stream as
// ctl and the runner would.
type roleCluster struct {
	url   string
	admin *nats.Conn
	js    jetstream.JetStream
	apps  jetstream.KeyValue
	// logins of the app role, by name
	appLogins map[string]nats.Option
}

func startRoleCluster(t *testing.T, ctx context.Context) *roleCluster {
	t.Helper()
	dir := t.TempDir()
	seed := filepath.Join(dir, "app.nk")
	if err := os.WriteFile(seed, []byte(appNKeySeed), 0o600); err != nil {
		t.Fatal(err)
	}
	addr := testutil.FreeAddr(t)
	conf := filepath.Join(dir, "narun.toml")
	body := fmt.Sprintf(`[nats]
listen = %q
app_nkeys = [%q]

[[nats.users]]
user = "admin"
password = "a"

[[nats.users]]
user = "app"
password = "b"
role = "app"
`, addr, appNKey)
	if err := os.WriteFile(conf, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	startApplet(t, addr, "--config", conf)
	nkey, err := nats.NkeyOptionFromSeed(seed)
	if err != nil {
		t.Fatal(err)
	}
	c := &roleCluster{url: "nats://" + addr, appLogins: map[string]nats.Option{"user": nats.UserInfo("app", "b"), "nkey": nkey}}
	c.admin = c.connect(t, nats.UserInfo("admin", "a"))
	c.js, _ = jetstream.New(c.admin)
	if c.apps, err = c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.AppsBucket}); err != nil {
		t.Fatal(err)
	}
	for _, b := range []string{names.RoutesBucket, names.NodesBucket, names.SecretsBucket} {
		if _, err := c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}
	for _, b := range []string{names.BinariesBucket, names.FilesBucket} {
		if _, err := c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: b}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.js.CreateStream(ctx, jetstream.StreamConfig{Name: names.LogsStream, Subjects: []string{names.LogsSubjects}}); err != nil {
		t.Fatal(err)
	}
	return c
}

func (c *roleCluster) connect(t *testing.T, login nats.Option) *nats.Conn {
	t.Helper()
	// Violations are read from LastError, not logged.
	nc, err := nats.Connect(c.url, login, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	return nc
}

// An app's login serves and calls services and keeps its own buckets, but
// cannot write narun's state, touch its streams or publish its events; an
// admin login can.
func TestAppRole(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := startRoleCluster(t, ctx)

	for name, login := range c.appLogins {
		t.Run(name, func(t *testing.T) {
			server, client := c.connect(t, login), c.connect(t, login)
			svc, err := micro.AddService(server, micro.Config{Name: "greet-" + name, Version: "1.0.0",
				Endpoint: &micro.EndpointConfig{Subject: "greet." + name, Handler: micro.HandlerFunc(func(r micro.Request) {
					r.Respond(append([]byte("hello "), r.Data()...))
				})}})
			if err != nil {
				t.Fatal(err)
			}
			defer svc.Stop()
			// The service's subscriptions reach the server with this flush;
			// a request on the other connection could otherwise overtake them.
			if err := server.Flush(); err != nil {
				t.Fatal(err)
			}
			if m, err := client.Request("greet."+name, []byte("app"), 5*time.Second); err != nil || string(m.Data) != "hello app" {
				t.Fatalf("request to the app's service: %v, %v", m, err)
			}
			if m, err := client.Request("$SRV.INFO.greet-"+name, nil, 5*time.Second); err != nil || !bytes.Contains(m.Data, []byte("greet."+name)) {
				t.Fatalf("$SRV.INFO of the app's service: %v, %v", m, err)
			}

			js, _ := jetstream.New(client)
			own, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "own-" + name})
			if err != nil {
				t.Fatalf("create its own bucket: %v", err)
			}
			if _, err := own.Put(ctx, "k", []byte("v")); err != nil {
				t.Fatalf("put to its own bucket: %v", err)
			}
			if e, err := own.Get(ctx, "k"); err != nil || string(e.Value()) != "v" {
				t.Fatalf("get from its own bucket: %v, %v", e, err)
			}

			for _, subj := range []string{
				"$KV.narun-apps.evil", // a spec
				"$KV.narun-routes.evil",
				"$KV.narun-secrets.evil",
				"$O.narun-binaries.C.evil", // a binary's chunk
				"$O.narun-binaries.M.evil", // and its meta
				"narun.events.evil.node-1",
				"narun.logs.evil.node-1.1",
				"$JS.API.STREAM.CREATE.KV_narun-apps",
				"$JS.API.STREAM.CREATE.OBJ_narun-binaries",
				"$JS.API.STREAM.DELETE.KV_narun-apps",
				"$JS.API.STREAM.DELETE.OBJ_narun-binaries",
				"$JS.API.STREAM.PURGE.KV_narun-nodes",
				"$JS.API.STREAM.MSG.DELETE.OBJ_narun-files",
				"$JS.API.CONSUMER.CREATE.KV_narun-apps",
				"$JS.API.CONSUMER.DURABLE.CREATE.NARUN_LOGS.spy",
				"$JS.API.DIRECT.GET.KV_narun-secrets.$KV.narun-secrets.db",
				"$JS.hub.API.STREAM.DELETE.KV_narun-apps",
			} {
				if err := natstest.PublishRefused(t, client, subj); err == nil {
					t.Errorf("the app role may publish to %s", subj)
				}
			}
		})
	}

	if _, err := c.apps.Get(ctx, "evil"); !errors.Is(err, jetstream.ErrKeyNotFound) {
		t.Errorf("narun-apps evil: %v, want no such key", err)
	}
	for _, s := range []string{"KV_narun-apps", "OBJ_narun-binaries"} {
		if _, err := c.js.Stream(ctx, s); err != nil {
			t.Errorf("stream %s after the app's attempts: %v", s, err)
		}
	}

	// The admin login, given no role, may do all of it.
	if _, err := c.apps.Put(ctx, "web", []byte("{}")); err != nil {
		t.Errorf("admin put to narun-apps: %v", err)
	}
	bins, err := c.js.ObjectStore(ctx, names.BinariesBucket)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bins.PutBytes(ctx, "web", []byte("\x7fELF")); err != nil {
		t.Errorf("admin put to narun-binaries: %v", err)
	}
	if err := natstest.PublishRefused(t, c.admin, "narun.events.web.node-1"); err != nil {
		t.Errorf("admin event: %v", err)
	}
	for _, b := range []string{names.AppsBucket, names.BinariesBucket} {
		del := c.js.DeleteKeyValue
		if b == names.BinariesBucket {
			del = c.js.DeleteObjectStore
		}
		if err := del(ctx, b); err != nil {
			t.Errorf("admin delete %s: %v", b, err)
		}
	}
	if _, err := c.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: names.AppsBucket}); err != nil {
		t.Errorf("admin create narun-apps: %v", err)
	}
	if _, err := c.js.CreateObjectStore(ctx, jetstream.ObjectStoreConfig{Bucket: names.BinariesBucket}); err != nil {
		t.Errorf("admin create narun-binaries: %v", err)
	}
}

// The limit docs/SECURITY.md states: the app role stops an app's own
// publishes to narun's subjects, not what the server publishes for it.
// The server answers a request wherever its reply subject says, and
// republishes a stream's messages wherever its config says: an app writes
// a spec into narun-apps through its own bucket and its own stream.
func TestAppRoleStillWritesStateThroughJetStream(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c := startRoleCluster(t, ctx)
	w, err := c.apps.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()

	app := c.connect(t, c.appLogins["user"])
	js, _ := jetstream.New(app)
	own, err := js.CreateKeyValue(ctx, jetstream.KeyValueConfig{Bucket: "own"})
	if err != nil {
		t.Fatal(err)
	}
	seq, err := own.Put(ctx, "spec", []byte(`{"via":"reply"}`))
	if err != nil {
		t.Fatal(err)
	}
	req, _ := json.Marshal(map[string]uint64{"seq": seq})
	if err := app.PublishRequest("$JS.API.DIRECT.GET.KV_own", "$KV.narun-apps.replied", req); err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "OWN", Subjects: []string{"own.spec"},
		RePublish: &jetstream.RePublish{Source: "own.spec", Destination: "$KV.narun-apps.republished"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "own.spec", []byte(`{"via":"republish"}`)); err != nil {
		t.Fatal(err)
	}

	want := map[string]string{"replied": `{"via":"reply"}`, "republished": `{"via":"republish"}`}
	for len(want) > 0 {
		select {
		case e := <-w.Updates():
			if string(e.Value()) != want[e.Key()] {
				t.Fatalf("narun-apps %s = %q, want %q", e.Key(), e.Value(), want[e.Key()])
			}
			delete(want, e.Key())
		case <-ctx.Done():
			t.Fatalf("%v did not reach narun-apps: if the server no longer writes for the app, update docs/SECURITY.md", want)
		}
	}
}
