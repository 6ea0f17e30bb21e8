package embednats

import (
	"net/url"
	"slices"
	"strings"
)

// RedactURLs masks the logins in s, a comma-separated list of NATS URLs as
// nats_url holds them (with or without a scheme), or a message that quotes
// such URLs: user:password@ becomes user:xxxxx@, as nats.go's
// ConnectedUrlRedacted writes it, and token@ becomes xxxxx@, which
// ConnectedUrlRedacted would leave readable. It reads s as text, so it
// also serves URLs that do not parse.
func RedactURLs(s string) string {
	return mapLogins(s, true, func(login string) string {
		if user, _, ok := strings.Cut(login, ":"); ok {
			return user + ":xxxxx@"
		}
		return "xxxxx@"
	})
}

// WithoutLogins removes the logins (user:password@, token@) of the URLs
// in s, a comma-separated list as nats_url holds them.
func WithoutLogins(s string) string {
	return mapLogins(s, false, func(string) string { return "" })
}

// mapLogins replaces each login of the URLs in s, "@" included, by what f
// returns for it. A URL's authority runs from the scheme (or the start of
// a list element without one) to the first '/', '?' or '#', and its login
// to the last '@' there, as net/url reads it; a quote or a space also ends
// it, for URLs quoted in a message. A password with an unescaped '/', '?'
// or '#' (a base64 secret) makes that authority end inside the password,
// and the URL not parse: when what net/url would take for host:port is
// none, the login runs to the last '@' before the quote or space, and the
// start of the password that net/url's error quotes as the port is hidden
// too. With hideAmbiguous the login always runs to that last '@': a
// password can hold an '@' as well as a '/' ("u:p@ss#w@h" reads as host
// ss), or start as a port does ("u:1/pw@h" reads as host u, port 1), and a
// log had better hide the host of a URL with an '@' in its path or query,
// which NATS has no use for, than show a password.
func mapLogins(s string, hideAmbiguous bool, f func(login string) string) string {
	var ports []string // `":<start of a password>"`, as net/url quotes a port
	parts := strings.Split(s, ",")
	for i, p := range parts {
		var starts []int
		if !strings.Contains(p, "://") {
			starts = append(starts, len(p)-len(strings.TrimLeft(p, " \t")))
		}
		for j := 0; ; {
			k := strings.Index(p[j:], "://")
			if k < 0 {
				break
			}
			j += k + len("://")
			starts = append(starts, j)
		}
		// From the last, so that a replacement moves no start still to do.
		for _, start := range slices.Backward(starts) {
			quoted := p[start:]
			if end := strings.IndexAny(quoted, "\" \t\r\n"); end >= 0 {
				quoted = quoted[:end]
			}
			auth := quoted
			if end := strings.IndexAny(auth, "/?#"); end >= 0 {
				auth = auth[:end]
				if strings.Contains(quoted[end:], "@") && (hideAmbiguous || !strings.Contains(auth, "@") && !isHostPort(auth)) {
					auth = quoted
					if _, pass, ok := strings.Cut(auth, ":"); ok {
						if end := strings.IndexAny(pass, "/?#@"); end > 0 {
							ports = append(ports, `":`+pass[:end]+`"`)
						}
					}
				}
			}
			if at := strings.LastIndex(auth, "@"); at >= 0 {
				p = p[:start] + f(auth[:at]) + p[start+at+1:]
			}
		}
		parts[i] = p
	}
	s = strings.Join(parts, ",")
	for _, port := range ports {
		s = strings.ReplaceAll(s, port, `":xxxxx"`)
	}
	return s
}

// isHostPort reports whether auth, an authority without a login, reads as
// a host with no port or a numeric one, as net/url accepts it.
func isHostPort(auth string) bool {
	if strings.HasPrefix(auth, "[") {
		return true
	}
	i := strings.LastIndex(auth, ":")
	if i < 0 {
		return true
	}
	port := auth[i+1:]
	return port != "" && strings.Trim(port, "0123456789") == ""
}

// redacted is u with its login masked. url.URL.Redacted masks a password
// only, and leaves a user without one readable: a token, which
// nats-server presents as a leaf remote's login.
func redacted(u *url.URL) string { return RedactURLs(u.String()) }

// loginsHidden is an error of nats-server whose text may quote URLs with
// their logins: it hides passwords only (redactURLList), tokens not.
type loginsHidden struct{ err error }

func (e loginsHidden) Error() string { return RedactURLs(e.err.Error()) }

func (e loginsHidden) Unwrap() error { return e.err }
