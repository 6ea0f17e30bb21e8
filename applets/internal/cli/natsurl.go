package cli

import "github.com/narun/narun/embednats"

// RedactURLs is embednats.RedactURLs, kept for the applets that log
// nats_url.
func RedactURLs(s string) string { return embednats.RedactURLs(s) }

// RedactError hides the logins in err's message, keeping err for
// errors.Is and errors.As: nats.go quotes a URL it cannot parse, password
// included.
func RedactError(err error) error {
	return redactedError{err}
}

type redactedError struct{ err error }

func (e redactedError) Error() string { return embednats.RedactURLs(e.err.Error()) }
func (e redactedError) Unwrap() error { return e.err }

// WithoutLogins is embednats.WithoutLogins.
func WithoutLogins(s string) string { return embednats.WithoutLogins(s) }
