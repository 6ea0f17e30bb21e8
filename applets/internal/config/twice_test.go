package config

import (
	"testing"
)

// A key or table written twice is named as the other problems are, with
// the line of its second writing, not in the TOML decoder's own words.
func TestKeyWrittenTwice(t *testing.T) {
	t.Parallel()
	var v struct {
		Replicas int               `toml:"replicas"`
		Env      map[string]string `toml:"env"`
	}
	for _, tc := range []struct{ name, data, want string }{
		{"key", "replicas = 1\nreplicas = 2\n", `app.toml:2: key "replicas": written twice: TOML takes each key and table once`},
		{"table", "[env]\nA = \"1\"\n\n[env]\nB = \"2\"\n", `app.toml:4: key "env": written twice: TOML takes each key and table once`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeStrict("app.toml", []byte(tc.data), &v)
			if err == nil || err.Error() != tc.want {
				t.Errorf("error %v\nwant %s", err, tc.want)
			}
		})
	}
}
