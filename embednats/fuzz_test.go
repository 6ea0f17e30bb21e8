package embednats_test

import (
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/narun/narun/embednats"
)

// FuzzRedactURLs redacts NATS URLs with arbitrary logins, as nats_url,
// routes and leaf remotes hold them, and the errors net/url gives for
// those that do not parse: a URL that parses parses after redaction with
// the same user and host and the password masked, and the password shows
// neither in the redacted URL nor in the redacted error. Inputs that a
// comma, a quote or a space split into several URLs (as nats_url and
// messages do), or a user name that needs escaping, are not the question
// here.
func FuzzRedactURLs(f *testing.F) {
	f.Add("nats://", "edge", "edge-secret", "10.0.0.1:4222")
	f.Add("", "leaf", "Zm9v/YmFy+", "hub:7422")
	f.Add("tls://", "u", "Zm9v?YmFy", "127.0.0.1:1/x@y")
	f.Add("ws://", "a", "p@ss#w", "[::1]:80")
	f.Add("nats-route://", "r", "s3cr3t%41", "host:42x")
	f.Fuzz(func(t *testing.T, scheme, user, pass, host string) {
		s := scheme + user + ":" + pass + "@" + host
		// A user with '/', '?', '#' or '@' ends the authority or the
		// login before the password, and one with '[' or ']' starts or
		// ends an IPv6 host: it cannot be written unescaped. What Go's
		// quoting escapes (control characters, invalid UTF-8)
		// comes back escaped in net/url's errors ("\xc6"), whose digits
		// can spell the password by chance.
		if strings.ContainsAny(s, ", \t\r\n\"") || strconv.Quote(s) != `"`+s+`"` || strings.ContainsAny(user, "/?#@[]") ||
			strings.Count(s, "://") > 1 || scheme != "" && !strings.HasSuffix(scheme, "://") {
			return
		}
		r := embednats.RedactURLs(s)
		u, err := url.Parse(s)
		if p, ok := userPassword(u, err); ok && p != "" {
			// An '@' past the authority may end a password with a '/',
			// '?' or '#' ("u:p@ss#w@h" reads as host ss): the host after
			// it is what redaction keeps.
			want, werr := u, error(nil)
			rest := s[len(scheme):]
			if end := strings.IndexAny(rest, "/?#"); end >= 0 && strings.Contains(rest[end:], "@") {
				want, werr = url.Parse(scheme + "x@" + rest[strings.LastIndex(rest, "@")+1:])
			}
			if werr == nil {
				ru, err := url.Parse(r)
				if err != nil {
					t.Fatalf("RedactURLs(%q) = %q, which does not parse: %v", s, r, err)
				}
				if rp, _ := ru.User.Password(); rp != "xxxxx" || ru.User.Username() != u.User.Username() || ru.Host != want.Host {
					t.Fatalf("RedactURLs(%q) = %q: user %q, password %q, host %q", s, r, ru.User.Username(), rp, ru.Host)
				}
			}
		}
		// A password that shows elsewhere in the input, or in the words
		// of net/url's errors, cannot tell a leak.
		if len(pass) < 4 || strings.Count(s, pass) > 1 || strings.Contains("parse invalid port after host character in escape xxxxx", pass) {
			return
		}
		if strings.Contains(r, pass) {
			t.Fatalf("RedactURLs(%q) = %q shows the password", s, r)
		}
		// nats.go adds the scheme to a URL without one before it parses
		// it, so its errors quote URLs with a scheme only.
		if err != nil && scheme != "" {
			if m := embednats.RedactURLs(err.Error()); strings.Contains(m, pass) {
				t.Fatalf("RedactURLs(%q) = %q shows the password", err.Error(), m)
			}
		}
	})
}

// userPassword is u's password when s parsed into u.
func userPassword(u *url.URL, err error) (string, bool) {
	if err != nil {
		return "", false
	}
	return u.User.Password()
}
