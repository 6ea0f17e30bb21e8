package consumer

import "strings"

// hideLogins masks in s the logins of urls, a NATS server list as
// NARUN_NATS_URL gives it: user:password@ becomes user:xxxxx@ and token@
// xxxxx@. An app's errors end in its logs, and nats.go quotes a URL it
// cannot parse as given. Each login is replaced as text wherever s holds
// it, so that it also goes from a URL that does not parse; net/url's
// error then quotes the start of a password holding a '/', '?' or '#' as
// the port, which goes too.
func hideLogins(s, urls string) string {
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		if _, rest, ok := strings.Cut(u, "://"); ok {
			u = rest
		}
		at := strings.LastIndex(u, "@")
		if at < 0 {
			continue
		}
		login, masked := u[:at], "xxxxx"
		if user, pass, ok := strings.Cut(login, ":"); ok {
			masked = user + ":xxxxx"
			if end := strings.IndexAny(pass, "/?#"); end > 0 {
				s = strings.ReplaceAll(s, `":`+pass[:end]+`"`, `":xxxxx"`)
			}
		}
		s = strings.ReplaceAll(s, login+"@", masked+"@")
	}
	return s
}

// loginsHidden is err with the logins of a server list masked in its text,
// still err for errors.Is and errors.As.
type loginsHidden struct {
	err  error
	text string
}

func (e loginsHidden) Error() string { return e.text }
func (e loginsHidden) Unwrap() error { return e.err }
