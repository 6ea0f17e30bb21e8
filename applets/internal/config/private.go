package config

import (
	"path/filepath"
	"slices"
)

// PrivateFiles are the files of narun on this device whose content no app
// may read: the configuration itself (it may hold NATS passwords) and
// every key and credential file it names for narun's own use (its NATS
// logins, TLS, secrets and signing), but not certificates, nor the app_
// files the runner gives to apps. "" and repeats are left out. Each name
// is absolute, as the sandbox hides only such: Load makes those the file
// gives absolute, but not the file's own path as the search found it
// (./narun.toml), nor a flag's relative one (--key-file secret.key).
func (f *File) PrivateFiles() []string {
	client := func(c *Client) []string { return []string{c.NATSCreds, c.NATSNkey, c.NATSKey} }
	n := &f.NATS
	files := []string{
		f.Path,
		n.TLS.Key, n.Cluster.TLS.Key, n.Leafnodes.TLS.Key, f.Gateway.TLS.Key,
		f.Runner.MasterKeyFile, f.Ctl.MasterKeyFile, f.Ctl.SigningKeyFile,
	}
	for _, l := range n.Leafnodes.Remotes {
		files = append(files, l.Credentials, l.TLS.Key)
	}
	files = append(files, client(&f.Gateway.Client)...)
	files = append(files, client(&f.Runner.Client)...)
	files = append(files, client(&f.Ctl.Client)...)
	var out []string
	for _, name := range files {
		if name == "" {
			continue
		}
		// Only a working directory gone makes Abs fail; the name is then
		// left relative, and the sandbox refuses to start, naming it.
		if abs, err := filepath.Abs(name); err == nil {
			name = abs
		}
		if name = filepath.Clean(name); !slices.Contains(out, name) {
			out = append(out, name)
		}
	}
	return out
}
