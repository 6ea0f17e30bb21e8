package embednats

import (
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
	return mapLogins(s, func(login string) string {
		if user, _, ok := strings.Cut(login, ":"); ok {
			return user + ":xxxxx@"
		}
		return "xxxxx@"
	})
}

// WithoutLogins removes the logins (user:password@, token@) of the URLs
// in s, a comma-separated list as nats_url holds them.
func WithoutLogins(s string) string {
	return mapLogins(s, func(string) string { return "" })
}

// mapLogins replaces each login of the URLs in s, "@" included, by what f
// returns for it. A URL's authority runs from the scheme (or the start of
// a list element without one) to the first '/', '?' or '#', and its login
// to the last '@' there, as net/url reads it; a quote or a space also ends
// it, for URLs quoted in a message.
func mapLogins(s string, f func(login string) string) string {
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
			auth := p[start:]
			if end := strings.IndexAny(auth, "/?#\" \t\r\n"); end >= 0 {
				auth = auth[:end]
			}
			if at := strings.LastIndex(auth, "@"); at >= 0 {
				p = p[:start] + f(auth[:at]) + p[start+at+1:]
			}
		}
		parts[i] = p
	}
	return strings.Join(parts, ",")
}
