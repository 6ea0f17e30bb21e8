package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// Every file a narun.toml names is either private (PrivateFiles) or meant
// to be read by others: a key added to paths must be sorted into one of
// the two here, or an app could read it through a sandbox grant.
func TestPrivateFilesSortEveryPath(t *testing.T) {
	var f File
	f.Path = "/etc/narun/narun.toml"
	f.NATS.Leafnodes.Remotes = make([]LeafRemote, 2)
	public := map[*string]bool{}
	for i, p := range f.paths() {
		*p = "/files/" + string(rune('a'+i%26)) + string(rune('a'+i/26))
	}
	n, r := &f.NATS, &f.Runner
	for _, p := range []*string{
		&n.TLS.Cert, &n.TLS.CA, &n.Cluster.TLS.Cert, &n.Cluster.TLS.CA, &n.Leafnodes.TLS.Cert, &n.Leafnodes.TLS.CA,
		&f.Gateway.TLS.Cert, &f.Gateway.RoutesCache,
		&r.AppNATSCreds, &r.AppNATSNkey, &r.AppNATSCA, &r.AppNATSCert, &r.AppNATSKey,
		&f.Gateway.NATSCA, &f.Gateway.NATSCert, &r.NATSCA, &r.NATSCert, &f.Ctl.NATSCA, &f.Ctl.NATSCert,
	} {
		public[p] = true
	}
	for i := range n.Leafnodes.Remotes {
		public[&n.Leafnodes.Remotes[i].TLS.Cert], public[&n.Leafnodes.Remotes[i].TLS.CA] = true, true
	}
	private := f.PrivateFiles()
	if private[0] != f.Path {
		t.Errorf("PrivateFiles begins with %q, want the configuration %q", private[0], f.Path)
	}
	for _, p := range f.paths() {
		if got := slices.Contains(private, *p); got == public[p] {
			t.Errorf("file %s: private %v, public %v: want exactly one", *p, got, public[p])
		}
	}
}

// The sandbox hides only absolute paths, and refuses a start with any
// other: ./narun.toml, as the search finds it, and a flag's relative path
// (--key-file secret.key) must reach it absolute, or every sandboxed app
// of a narun up started beside its narun.toml fails.
func TestPrivateFilesAreAbsolute(t *testing.T) {
	dir := t.TempDir()
	t.Chdir(dir)
	if err := os.WriteFile("narun.toml", []byte("[runner]\nmaster_key_file = \"secret.key\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := Load("", func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	f.Ctl.MasterKeyFile = "ctl.key" // as --key-file sets it
	want := []string{filepath.Join(dir, "narun.toml"), filepath.Join(dir, "secret.key"), filepath.Join(dir, "ctl.key")}
	if got := f.PrivateFiles(); !slices.Equal(got, want) {
		t.Errorf("PrivateFiles = %q, want %q", got, want)
	}
}
