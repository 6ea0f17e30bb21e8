package signing

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func newKey(t *testing.T) *Key {
	t.Helper()
	k, err := Generate()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSignAndVerify(t *testing.T) {
	k, other := newKey(t), newKey(t)
	v, err := NewVerifier("trusted_keys", []string{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	spec := []byte("name = \"a\"\nversion = \"1\"\n")
	signed := k.Sign(spec)
	if body, err := v.Verify(signed); err != nil || string(body) != string(spec) {
		t.Fatalf("verify own signature: %q, %v", body, err)
	}
	// Signing again replaces the trailer instead of stacking one.
	if again := k.Sign(signed); string(again) != string(signed) {
		t.Errorf("signing a signed value:\n%s\nwant\n%s", again, signed)
	}
	// A value without a final newline is signed as if it had one.
	if body, err := v.Verify(k.Sign([]byte(`[{"path":"/a"}]`))); err != nil || string(body) != "[{\"path\":\"/a\"}]\n" {
		t.Errorf("JSON value: %q, %v", body, err)
	}
	for _, tc := range []struct {
		name, value, want string
	}{
		{"unsigned", string(spec), "not signed"},
		{"untrusted key", string(other.Sign(spec)), "does not trust"},
		{"changed after signing", strings.Replace(string(signed), `"1"`, `"2"`, 1), "does not match"},
		{"line added after the trailer", string(signed) + "user = \"root\"\n", "not signed"},
		{"garbled signature", string(signed[:len(signed)-5]) + "!!!!\n", "not the base64 signature"},
	} {
		if _, err := v.Verify([]byte(tc.value)); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, tc.want)
		}
	}
	// Trusting nothing checks nothing, but still strips the trailer.
	none, _ := NewVerifier("trusted_keys", nil)
	if body, err := none.Verify(signed); err != nil || string(body) != string(spec) || none.Enabled() {
		t.Errorf("no trusted keys: %q, %v", body, err)
	}
}

func TestBadKeys(t *testing.T) {
	if _, err := NewVerifier("runner.trusted_keys", []string{"narun-ed25519:short"}); err == nil || !strings.Contains(err.Error(), "runner.trusted_keys[0]") {
		t.Errorf("short public key: %v", err)
	}
	if _, err := ParseKey([]byte("hello")); err == nil {
		t.Error("parsed a key file without a seed")
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "sign.key")
	if err := os.WriteFile(path, newKey(t).File(), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable key file: %v", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadKey(path); err != nil {
		t.Errorf("key file with mode 0600: %v", err)
	}
}

func TestSignedBy(t *testing.T) {
	k := newKey(t)
	spec := []byte("name = \"a\"\n")
	if pub, err := SignedBy(spec); pub != "" || err != nil {
		t.Errorf("unsigned: %q, %v", pub, err)
	}
	signed := k.Sign(spec)
	if pub, err := SignedBy(signed); pub != k.Public() || err != nil {
		t.Errorf("signed: %q, %v", pub, err)
	}
	if pub, err := SignedBy([]byte(strings.Replace(string(signed), `"a"`, `"b"`, 1))); pub != k.Public() || err == nil {
		t.Errorf("changed after signing: %q, %v, want the key and an error", pub, err)
	}
}

// ctl reads the key file a heartbeat names, and anyone on NATS may write
// a heartbeat: a FIFO there, with the mode of a key file, is refused at
// once rather than read for ever.
func TestLoadKeyRefusesAFIFO(t *testing.T) {
	path := filepath.Join(t.TempDir(), "signing.key")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := LoadKey(path)
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("LoadKey of a FIFO: %v, want it refused as not a regular file", err)
		}
	case <-time.After(10 * time.Second):
		// Unblock the read so that the test binary can end.
		if f, err := os.OpenFile(path, os.O_WRONLY, 0); err == nil {
			f.Close()
		}
		t.Fatal("LoadKey of a FIFO still reading after 10s")
	}
}

// The key a trailer names is printed by app status, app history and
// deploy's refusals; any client that can write a bucket writes it, so one
// that names no key must not bring its escape sequences along.
func TestSignedByQuotesWhatIsNoKey(t *testing.T) {
	pub, err := SignedBy([]byte("name = \"a\"\n" + trailerPrefix + "\x1b]0;owned\x07\x1b[2J sig\n"))
	if err == nil || strings.ContainsAny(pub, "\x1b\x07") || !strings.Contains(pub, `\x1b`) {
		t.Fatalf("SignedBy = %q, %v; want the text quoted and an error", pub, err)
	}
}

// A signature's text is decoded strictly: the std decoder skips \r and
// \n, and ignores the unused bits of the last character, so without that
// several byte strings would verify as one signed value.
func TestVerifyRefusesANonCanonicalSignature(t *testing.T) {
	k := newKey(t)
	v, err := NewVerifier("trusted_keys", []string{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	signed := string(k.Sign([]byte("name = \"a\"\n")))
	trailerAt := strings.LastIndex(signed, " ") + 1
	body, sig := signed[:trailerAt], strings.TrimSuffix(signed[trailerAt:], "\n")
	// An Ed25519 signature is 64 bytes, 86 characters of which the last
	// carries 4 unused bits, which Sign leaves 0: setting one changes no
	// byte.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	unusedBitSet := sig[:len(sig)-1] + string(alphabet[strings.IndexByte(alphabet, sig[len(sig)-1])|1])
	for _, tc := range []struct{ name, value string }{
		{"carriage return inside", body + sig[:10] + "\r" + sig[10:] + "\n"},
		{"carriage return before the newline", body + sig + "\r\n"},
		{"space after", body + sig + " \n"},
		{"tab before", body + "\t" + sig + "\n"},
		{"unused bits of the last character set", body + unusedBitSet + "\n"},
	} {
		if _, err := v.Verify([]byte(tc.value)); err == nil || !strings.Contains(err.Error(), "not the base64 signature") {
			t.Errorf("%s: %v, want an error saying %q", tc.name, err, "not the base64 signature")
		}
	}
}
