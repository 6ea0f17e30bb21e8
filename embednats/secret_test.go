package embednats_test

import (
	"log/slog"
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
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

// A leaf remote's URL with a user and no password presents its token as
// the user name, which the hub logs when it refuses the login: a name the
// hub does not know may be such a secret, and is hidden, while one it
// knows, refused for a wrong password, stays named.
func TestRefusedLeafLoginHidesAnUnknownName(t *testing.T) {
	t.Parallel()
	const token = "s3cr3t-token"
	leafAddr := natstest.FreeAddr(t)
	var logs syncBuffer
	natstest.StartConfig(t, embednats.Config{JetStreamDomain: "hub", Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Users:     []embednats.User{{User: "ops", Password: "s3cret"}},
		Leafnodes: embednats.Leafnodes{Listen: leafAddr}})
	for _, tc := range []struct {
		name, login, want string
	}{
		{"a token", token, `authentication error - User \"xxxxx\"`},
		{"a known user's wrong password", "ops:wrong", `authentication error - User \"ops\"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := strings.Count(logs.String(), "authentication error")
			leaf := natstest.StartConfig(t, embednats.Config{JetStreamDomain: "edge",
				Leafnodes: embednats.Leafnodes{Remotes: []embednats.LeafRemote{{URLs: []string{"nats-leaf://" + tc.login + "@" + leafAddr}}}}})
			waitLogged(t, &logs, "authentication error", before)
			leaf.Shutdown()
			if !strings.Contains(logs.String(), tc.want) {
				t.Errorf("the refusal is not logged as %q:\n%s", tc.want, logs.String())
			}
		})
	}
	if strings.Contains(logs.String(), token) {
		t.Errorf("the hub's log shows the token:\n%s", logs.String())
	}
}
