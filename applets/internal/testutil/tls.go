package testutil

import (
	"crypto/x509"
	"os"
	"testing"
	"time"

	"github.com/narun/narun/embednats/natstest"
)

// CertPair writes a certificate for 127.0.0.1 named cn, and its key, at
// certPath and keyPath, and returns a pool that trusts it: that of the
// test CA of its own that signed it. Each file is renamed into place, so
// that a gateway watching them never reads one half-written.
func CertPair(t *testing.T, certPath, keyPath, cn string) *x509.CertPool {
	t.Helper()
	return CertPairValid(t, certPath, keyPath, cn, time.Now().Add(-time.Hour), time.Now().Add(time.Hour))
}

// CertPairValid is CertPair for a certificate valid from notBefore to
// notAfter.
func CertPairValid(t *testing.T, certPath, keyPath, cn string, notBefore, notAfter time.Time) *x509.CertPool {
	t.Helper()
	ca := natstest.NewCA(t)
	cert, key := ca.IssueValid(t, cn, notBefore, notAfter)
	// The key first: a gateway reloads when the certificate changes.
	for _, f := range [][2]string{{key, keyPath}, {cert, certPath}} {
		b, err := os.ReadFile(f[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f[1]+".tmp", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(f[1]+".tmp", f[1]); err != nil {
			t.Fatal(err)
		}
	}
	return ca.Pool()
}
