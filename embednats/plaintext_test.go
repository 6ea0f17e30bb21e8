package embednats_test

import (
	"log/slog"
	"strings"
	"testing"

	"golang.org/x/crypto/bcrypt"

	"github.com/narun/narun/embednats"
)

// nats-server's "Plaintext passwords detected" tells the operator to hash
// the logins with bcrypt; it must go once they are, rather than stay for
// the in-process login, which the operator cannot hash.
func TestPlaintextWarningOnlyForTheOperatorsPasswords(t *testing.T) {
	t.Parallel()
	hash, err := bcrypt.GenerateFromPassword([]byte("edge-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name     string
		password string
		warn     bool
	}{
		{"plaintext", "edge-secret", true},
		{"bcrypt", string(hash), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			var logs syncBuffer
			s, err := embednats.Start(embednats.Config{Listen: "127.0.0.1:0", DataDir: t.TempDir(),
				Users:  []embednats.User{{User: "edge", Password: tc.password}},
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			if err != nil {
				t.Fatal(err)
			}
			defer s.Shutdown()
			// The in-process login still works, also on the server a
			// restart starts, whose options are built anew.
			nc, err := s.Connect()
			if err != nil {
				t.Fatal(err)
			}
			nc.Close()
			if err := s.Restart(); err != nil {
				t.Fatal(err)
			}
			if nc, err = s.Connect(); err != nil {
				t.Fatalf("in-process login after a restart: %v", err)
			}
			nc.Close()
			if got := strings.Contains(logs.String(), "Plaintext passwords detected"); got != tc.warn {
				t.Errorf("plaintext warning logged: %v, want %v; logs:\n%s", got, tc.warn, logs.String())
			}
		})
	}
}
