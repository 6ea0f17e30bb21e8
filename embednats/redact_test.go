package embednats_test

import (
	"testing"

	"github.com/narun/narun/embednats"
)

func TestRedactURLs(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"nats://edge:edge-secret@10.0.0.1:4222", "nats://edge:xxxxx@10.0.0.1:4222"},
		{"nats://s3cr3t@10.0.0.1:4222", "nats://xxxxx@10.0.0.1:4222"},
		{"nats://edge:@10.0.0.1", "nats://edge:xxxxx@10.0.0.1"},
		{"edge:edge-secret@10.0.0.1:4222", "edge:xxxxx@10.0.0.1:4222"},
		{"s3cr3t@10.0.0.1", "xxxxx@10.0.0.1"},
		{"10.0.0.1:4222", "10.0.0.1:4222"},
		{
			"nats://edge:a@10.0.0.1:4222,nats://edge:b@10.0.0.2:4222, tls://c@nats.example.com,edge:d@10.0.0.4",
			"nats://edge:xxxxx@10.0.0.1:4222,nats://edge:xxxxx@10.0.0.2:4222, tls://xxxxx@nats.example.com,edge:xxxxx@10.0.0.4",
		},
		// net/url reads the login up to the last '@' of the authority.
		{"nats://edge:p@ss@10.0.0.1", "nats://edge:xxxxx@10.0.0.1"},
		// An '@' past the authority may end a password with a '/', '?'
		// or '#' in it: what precedes it is hidden.
		{"nats://10.0.0.1:4222/x@y", "nats://10.0.0.1:xxxxx@y"},
		{"nats://u:1/pw@host", "nats://u:xxxxx@host"},
		{"0:A:0#@0", "0:xxxxx@0"},
		{"nats://edge:pw@host/x@y", "nats://edge:xxxxx@y"},
		{"ws://edge:pw@host:80/path?q=a@b", "ws://edge:xxxxx@b"},
		{"nats://u:p@ss#word@host", "nats://u:xxxxx@host"},
		// A message quoting a URL, as url.Parse's errors do.
		{`parse "nats://edge:pw@host:42x": invalid port ":42x" after host`, `parse "nats://edge:xxxxx@host:42x": invalid port ":42x" after host`},
		// A password with an unescaped '/', '?' or '#', as base64 secrets
		// have: the URL does not parse, and net/url's error quotes the
		// start of the password as the port.
		{"nats://edge:Zm9v/YmFy+@10.0.0.1:4222", "nats://edge:xxxxx@10.0.0.1:4222"},
		{"nats-leaf://leaf:Zm9v#YmFy@hub:7422,nats-leaf://leaf:a?b@hub2:7422", "nats-leaf://leaf:xxxxx@hub:7422,nats-leaf://leaf:xxxxx@hub2:7422"},
		{"edge:/secret@10.0.0.1", "edge:xxxxx@10.0.0.1"},
		{`connect to nats nats://u:Zm9v?YmFy@127.0.0.1:1: parse "nats://u:Zm9v?YmFy@127.0.0.1:1": invalid port ":Zm9v" after host`,
			`connect to nats nats://u:xxxxx@127.0.0.1:1: parse "nats://u:xxxxx@127.0.0.1:1": invalid port ":xxxxx" after host`},
		{`invalid url "nats-route://r:Zm9v/YmFy@127.0.0.1:6222"`, `invalid url "nats-route://r:xxxxx@127.0.0.1:6222"`},
		{"", ""},
	} {
		if got := embednats.RedactURLs(tc.in); got != tc.want {
			t.Errorf("RedactURLs(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestWithoutLogins(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"nats://edge:pw@10.0.0.1:4222,s3cr3t@10.0.0.2", "nats://10.0.0.1:4222,10.0.0.2"},
		// What nats.go connects to: an '@' past the authority is no login.
		{"nats://host/x@y", "nats://host/x@y"},
		{"nats://u:1/pw@host", "nats://u:1/pw@host"},
		{"nats://edge:Zm9v/YmFy+@10.0.0.1:4222", "nats://10.0.0.1:4222"},
	} {
		if got := embednats.WithoutLogins(tc.in); got != tc.want {
			t.Errorf("WithoutLogins(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
