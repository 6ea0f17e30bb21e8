package config_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/config"
)

// A relative path in narun.toml is relative to the file's directory, as
// in Prometheus's configuration: under systemd the working directory is /,
// and data_dir = "data" in /etc/narun/narun.toml went to /data. The
// environment and flags stay relative to the working directory.
func TestRelativePathsFollowTheFile(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "etc", "narun.toml")
	if err := os.Mkdir(filepath.Dir(file), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(file, []byte(`data_dir = "data"
[nats.tls]
cert = "tls/nats.pem"
key = "tls/nats.key"
ca = "tls/ca.pem"
[nats.cluster.tls]
cert = "tls/route.pem"
key = "tls/route.key"
ca = "tls/route-ca.pem"
[nats.leafnodes.tls]
cert = "tls/leaf.pem"
key = "tls/leaf.key"
ca = "tls/leaf-ca.pem"
[[nats.leafnodes.remotes]]
urls = ["nats-leaf://hub:7422"]
credentials = "hub.creds"
[nats.leafnodes.remotes.tls]
cert = "tls/remote.pem"
key = "tls/remote.key"
ca = "tls/remote-ca.pem"
[gateway]
nats_creds = "gw.creds"
nats_nkey = "gw.nk"
nats_ca = "gw-ca.pem"
nats_cert = "gw.pem"
nats_key = "gw.key"
routes_cache = "routes.json"
[gateway.tls]
cert = "https.pem"
key = "https.key"
[runner]
nats_creds = "runner.creds"
nats_nkey = "runner.nk"
nats_ca = "runner-ca.pem"
nats_cert = "runner.pem"
nats_key = "runner.key"
master_key_file = "secret.key"
app_nats_creds = "app.creds"
app_nats_nkey = "app.nk"
app_nats_ca = "app-ca.pem"
app_nats_cert = "app.pem"
app_nats_key = "app.key"
[ctl]
nats_creds = "ctl.creds"
nats_nkey = "ctl.nk"
nats_ca = "ctl-ca.pem"
nats_cert = "ctl.pem"
nats_key = "ctl.key"
master_key_file = "ctl-secret.key"
signing_key_file = "signing.key"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(file, noEnv)
	if err != nil {
		t.Fatal(err)
	}
	remote := cfg.NATS.Leafnodes.Remotes[0]
	for key, got := range map[string]string{
		"data_dir":      cfg.DataDir,
		"nats.tls.cert": cfg.NATS.TLS.Cert, "nats.tls.key": cfg.NATS.TLS.Key, "nats.tls.ca": cfg.NATS.TLS.CA,
		"nats.cluster.tls.cert": cfg.NATS.Cluster.TLS.Cert, "nats.cluster.tls.key": cfg.NATS.Cluster.TLS.Key, "nats.cluster.tls.ca": cfg.NATS.Cluster.TLS.CA,
		"nats.leafnodes.tls.cert": cfg.NATS.Leafnodes.TLS.Cert, "nats.leafnodes.tls.key": cfg.NATS.Leafnodes.TLS.Key, "nats.leafnodes.tls.ca": cfg.NATS.Leafnodes.TLS.CA,
		"nats.leafnodes.remotes.credentials": remote.Credentials,
		"nats.leafnodes.remotes.tls.cert":    remote.TLS.Cert, "nats.leafnodes.remotes.tls.key": remote.TLS.Key, "nats.leafnodes.remotes.tls.ca": remote.TLS.CA,
		"gateway.nats_creds": cfg.Gateway.NATSCreds, "gateway.nats_nkey": cfg.Gateway.NATSNkey, "gateway.nats_ca": cfg.Gateway.NATSCA,
		"gateway.nats_cert": cfg.Gateway.NATSCert, "gateway.nats_key": cfg.Gateway.NATSKey, "gateway.routes_cache": cfg.Gateway.RoutesCache,
		"gateway.tls.cert": cfg.Gateway.TLS.Cert, "gateway.tls.key": cfg.Gateway.TLS.Key,
		"runner.nats_creds": cfg.Runner.NATSCreds, "runner.nats_nkey": cfg.Runner.NATSNkey, "runner.nats_ca": cfg.Runner.NATSCA,
		"runner.nats_cert": cfg.Runner.NATSCert, "runner.nats_key": cfg.Runner.NATSKey, "runner.master_key_file": cfg.Runner.MasterKeyFile,
		"runner.app_nats_creds": cfg.Runner.AppNATSCreds, "runner.app_nats_nkey": cfg.Runner.AppNATSNkey, "runner.app_nats_ca": cfg.Runner.AppNATSCA,
		"runner.app_nats_cert": cfg.Runner.AppNATSCert, "runner.app_nats_key": cfg.Runner.AppNATSKey,
		"ctl.nats_creds": cfg.Ctl.NATSCreds, "ctl.nats_nkey": cfg.Ctl.NATSNkey, "ctl.nats_ca": cfg.Ctl.NATSCA,
		"ctl.nats_cert": cfg.Ctl.NATSCert, "ctl.nats_key": cfg.Ctl.NATSKey, "ctl.master_key_file": cfg.Ctl.MasterKeyFile,
		"ctl.signing_key_file": cfg.Ctl.SigningKeyFile,
	} {
		if !strings.HasPrefix(got, filepath.Dir(file)+"/") {
			t.Errorf("key %q = %q, want it under the file's directory %s", key, got, filepath.Dir(file))
		}
	}

	// What the file leaves out, and the environment, are the working
	// directory's.
	cfg, err = config.Load(file, func(k string) string {
		if k == "NARUN_DATA_DIR" {
			return "env-data"
		}
		return ""
	})
	if err != nil {
		t.Fatal(err)
	}
	if wd, _ := os.Getwd(); cfg.DataDir != filepath.Join(wd, "env-data") {
		t.Errorf("NARUN_DATA_DIR=env-data: data dir %q, want it in the working directory %s", cfg.DataDir, wd)
	}
	if os.Geteuid() != 0 {
		cfg, err = config.Load(writeConfig(t, "[runner]\nnode_id = \"a\"\n"), noEnv)
		if err != nil {
			t.Fatal(err)
		}
		if wd, _ := os.Getwd(); cfg.DataDir != filepath.Join(wd, "narun-data") {
			t.Errorf("default data dir %q, want ./narun-data of the working directory %s", cfg.DataDir, wd)
		}
	}
	cfg, err = config.Load(writeConfig(t, "[runner]\nmaster_key_file = \"/abs/secret.key\"\n"), noEnv)
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Runner.MasterKeyFile != "/abs/secret.key" {
		t.Errorf("absolute master_key_file became %q", cfg.Runner.MasterKeyFile)
	}
}
