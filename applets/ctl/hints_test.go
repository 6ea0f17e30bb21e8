package ctl

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
	"github.com/nats-io/nkeys"
)

// Errors an operator meets while setting up say what to do next.
func TestSetupErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	missing := filepath.Join(h.dir, "none.key")
	r := h.fails(1, "", "--key-file", missing, "secret", "keygen", "--add")
	if want := "key file " + missing + " does not exist: run narun ctl secret keygen without --add to create it"; !strings.Contains(r.err, want) {
		t.Errorf("keygen --add of a missing file: %q, want %q", r.err, want)
	}
	if _, err := os.Stat(missing); !os.IsNotExist(err) {
		t.Errorf("keygen --add made %s: %v", missing, err)
	}

	r = h.fails(2, "v\n", "secret", "set", "db")
	if want := "narun ctl secret keygen --key-file FILE makes one"; !strings.Contains(r.err, want) {
		t.Errorf("secret set without a key file: %q, want %q", r.err, want)
	}

	guarded := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		Users: []embednats.User{{User: "edge", Password: "edge-secret"}}})
	h.url = guarded.ClientURL()
	r = h.fails(1, "", "node", "list")
	if want := "Authorization Violation (the server wants a login, or refused this one: put user:password@ in --nats-url, or name a credentials file with --nats-creds or an nkey seed with --nats-nkey ([ctl] nats_url, nats_creds, nats_nkey))"; !strings.Contains(r.err, want) {
		t.Errorf("ctl without a login: %q, want %q", r.err, want)
	}
	// With a login given, saying to put one in the URL sent the operator
	// to what was done already: the password is what is wrong.
	h.url = strings.Replace(guarded.ClientURL(), "nats://", "nats://edge:wrong@", 1)
	r = h.fails(1, "", "node", "list")
	if want := `Authorization Violation (the server refused the login of user "edge" in --nats-url: check its password against the server's [[nats.users]]`; !strings.Contains(r.err, want) {
		t.Errorf("ctl with a wrong password: %q, want %q", r.err, want)
	}

	// An nkey has no password: the server lists its public key, or not.
	listed, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := listed.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	other, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	otherPub, err := other.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := other.Seed()
	if err != nil {
		t.Fatal(err)
	}
	keyed := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", NKeys: []embednats.NKey{{PublicKey: pub}}})
	h.url = keyed.ClientURL()
	seedFile := h.file("ctl.nk", string(seed)+"\n")
	r = h.fails(1, "", "--nats-nkey", seedFile, "node", "list")
	if want := "Authorization Violation (the server refused the login of the nkey seed " + seedFile + ": its public key " + otherPub + " is not in the server's [nats] nkeys"; !strings.Contains(r.err, want) || strings.Contains(r.err, "password") {
		t.Errorf("ctl with an nkey the server does not list: %q, want %q and no password", r.err, want)
	}
}

// A connection TLS refused says which TLS setting is missing or wrong.
func TestTLSErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ca := natstest.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "server")
	ctlCert, ctlKey := ca.Issue(t, "ctl")
	namedCert, namedKey := ca.Issue(t, "named", "nats.edge.test")
	verifying := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		TLS: embednats.TLS{Cert: serverCert, Key: serverKey, CA: ca.File, Verify: true}})
	named := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", TLS: embednats.TLS{Cert: namedCert, Key: namedKey}})
	plain := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	for _, tc := range []struct {
		name, url string
		args      []string
		want      string
	}{
		{"no CA", verifying.ClientURL(), nil, "signed by a CA this machine does not trust: name that CA with --nats-ca or [ctl] nats_ca"},
		{"no client certificate", verifying.ClientURL(), []string{"--nats-ca", ca.File}, "the server refused this client after TLS began: one that verifies clients wants a certificate its CA signed, --nats-cert and --nats-key"},
		{"certificate for another name", named.ClientURL(), []string{"--nats-ca", ca.File}, "the server's certificate is not for the host in the URL"},
		{"TLS to a plain server", plain.ClientURL(), []string{"--nats-ca", ca.File}, "the server does not offer TLS"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.url = tc.url
			r := h.fails(1, "", append(tc.args, "node", "list")...)
			if !strings.Contains(r.err, tc.want) {
				t.Errorf("ctl: %q, want %q", r.err, tc.want)
			}
		})
	}
	h.url = verifying.ClientURL()
	h.ok("", "--nats-ca", ca.File, "--nats-cert", ctlCert, "--nats-key", ctlKey, "node", "list")

	// A CA or certificate given but wrong is named: "name that CA with
	// --nats-ca" or "wants a certificate its CA signed, --nats-cert" sent
	// the operator to the setting already made.
	other := natstest.NewCA(t)
	r := h.fails(1, "", "--nats-ca", other.File, "node", "list")
	if want := "the server's certificate is not signed by the CA in " + other.File + " (--nats-ca): name the CA that signed it"; !strings.Contains(r.err, want) {
		t.Errorf("ctl with another CA: %q, want %q", r.err, want)
	}
	otherCert, otherKey := other.Issue(t, "ctl")
	r = h.fails(1, "", "--nats-ca", ca.File, "--nats-cert", otherCert, "--nats-key", otherKey, "node", "list")
	if want := "the server refused the certificate " + otherCert + " (--nats-cert): it takes only certificates of the CA it verifies clients with ([nats.tls] ca)"; !strings.Contains(r.err, want) {
		t.Errorf("ctl with a certificate of another CA: %q, want %q", r.err, want)
	}

	// A certificate the server refuses for its dates is named with them:
	// "wants a certificate its CA signed" sent the operator to a setting
	// already right.
	expiredCert, expiredKey := ca.IssueValid(t, "expired", time.Now().Add(-48*time.Hour), time.Now().Add(-24*time.Hour))
	r = h.fails(1, "", "--nats-ca", ca.File, "--nats-cert", expiredCert, "--nats-key", expiredKey, "node", "list")
	if want := "the certificate " + expiredCert + " (--nats-cert) expired on "; !strings.Contains(r.err, want) || !strings.Contains(r.err, "renew it") {
		t.Errorf("ctl with an expired certificate: %q, want %q and to renew it", r.err, want)
	}
	earlyCert, earlyKey := ca.IssueValid(t, "early", time.Now().Add(24*time.Hour), time.Now().Add(48*time.Hour))
	r = h.fails(1, "", "--nats-ca", ca.File, "--nats-cert", earlyCert, "--nats-key", earlyKey, "node", "list")
	if want := "the certificate " + earlyCert + " (--nats-cert) is valid only from "; !strings.Contains(r.err, want) {
		t.Errorf("ctl with a certificate not yet valid: %q, want %q", r.err, want)
	}

	// A wrong file is named by the flag, or by the key and its line.
	missing := filepath.Join(h.dir, "none.pem")
	r = h.fails(1, "", "--nats-ca", missing, "node", "list")
	if want := "--nats-ca: nats ca: open " + missing; !strings.Contains(r.err, want) {
		t.Errorf("ctl --nats-ca of a missing file: %q, want %q", r.err, want)
	}
	f, err := os.OpenFile(h.config, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString("nats_cert = " + strconv.Quote(missing) + "\nnats_key = " + strconv.Quote(ctlKey) + "\n"); err != nil {
		t.Fatal(err)
	}
	f.Close()
	r = h.fails(1, "", "--nats-ca", ca.File, "node", "list")
	if want := h.config + `:4: key "ctl.nats_cert": nats cert ` + missing; !strings.Contains(r.err, want) {
		t.Errorf("ctl with [ctl] nats_cert of a missing file: %q, want %q", r.err, want)
	}
}

// A purge of the earlier sealed values that fails after secret rotate
// says to rotate again, which purges every secret's history again:
// "set it again" asked for values the operator may not have at hand.
func TestSecretRotatePurgeFailureSaysToRotateAgain(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	key, asCtl := purgeDenied(t, h)
	h.ok("", "--key-file", key, "secret", "keygen", "--add")
	asCtl()
	r := h.fails(1, "", "--timeout", "1s", "--key-file", key, "secret", "rotate")
	if !strings.Contains(r.out, "re-encrypted db with key") {
		t.Fatalf("secret rotate did not re-encrypt db: stdout %q, stderr %q", r.out, r.err)
	}
	if !strings.Contains(r.err, "narun ctl secret rotate again to retry") || strings.Contains(r.err, "set it again") {
		t.Errorf("secret rotate whose purge failed: %q, want it to say to rotate again, not to set the secret again", r.err)
	}
}

// purgeDenied points h, as the user admin, at a new NATS server where the
// user ctl may write secrets but not purge their history: the server
// answers no such purge. It returns the key file it made, with the secret
// db stored under it, and asCtl, which points h at the server as ctl.
func purgeDenied(t *testing.T, h *harness) (key string, asCtl func()) {
	t.Helper()
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{
		{User: "admin", Password: "a"},
		{User: "ctl", Password: "c", Permissions: &embednats.Permissions{DenyPublish: []string{"$JS.API.STREAM.PURGE.KV_" + names.SecretsBucket}}},
	}})
	key = filepath.Join(h.dir, "secret.key")
	h.ok("", "--key-file", key, "secret", "keygen")
	h.url = strings.Replace(srv.ClientURL(), "nats://", "nats://admin:a@", 1)
	h.ok("v\n", "--key-file", key, "secret", "set", "db")
	return key, func() { h.url = strings.Replace(srv.ClientURL(), "nats://", "nats://ctl:c@", 1) }
}
