package embednats_test

import (
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
)

// A URL's user without a password is a token, which nats-server presents
// as the login of a leaf remote: an error about the URL hides it as it
// hides a password.
func TestURLErrorsHideTokens(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-token"
	for _, tc := range []struct {
		name string
		cfg  embednats.Config
		want string
	}{
		{"leaf url of another protocol", embednats.Config{Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"http://" + token + "@hub.example.com:7422"}}}}}, `"http://xxxxx@hub.example.com:7422": scheme "http"`},
		{"route without a port", embednats.Config{Listen: "127.0.0.1:-1", ServerName: "n1", Cluster: embednats.Cluster{Name: "narun", Listen: "127.0.0.1:-1",
			Routes: []string{"nats-route://" + token + "@10.0.0.2"}}}, `"nats-route://xxxxx@10.0.0.2": no port`},
		// nats-server's own refusal quotes the URLs, hiding passwords only.
		{"leaf urls of websocket and not", embednats.Config{Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{
			{URLs: []string{"ws://" + token + "@hub.example.com:80", "nats-leaf://" + token + "@hub.example.com:7422"}}}}}, "websocket"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			tc.cfg.DataDir = t.TempDir()
			for name, err := range map[string]error{"Check": embednats.Check(tc.cfg), "Start": startErr(tc.cfg)} {
				if err == nil || !strings.Contains(err.Error(), tc.want) {
					t.Errorf("%s: error = %v, want one mentioning %q", name, err, tc.want)
				} else if strings.Contains(err.Error(), token) {
					t.Errorf("%s: error shows the token: %v", name, err)
				}
			}
		})
	}
}

func startErr(cfg embednats.Config) error {
	s, err := embednats.Start(cfg)
	if err == nil {
		s.Shutdown()
	}
	return err
}
