package secrets

import (
	"bytes"
	"encoding/base64"
	"errors"
	"strings"
	"testing"
)

// Fixed keys, so that a failing input reproduces.
var (
	fuzzKey1 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{1}, 32))
	fuzzKey2 = base64.StdEncoding.EncodeToString(bytes.Repeat([]byte{2}, 32))
)

// FuzzOpen seals arbitrary values and opens arbitrary stored ones, as any
// client that can write narun-secrets could store them: a sealed value
// opens to itself after its round trip through JSON and under its own
// name only, and a stored value either opens or fails with one of the
// errors that say why, without panicking.
func FuzzOpen(f *testing.F) {
	r := ring(f, fuzzKey1, fuzzKey2)
	s, err := r.Seal("db-pass", []byte("hunter2"))
	if err != nil {
		f.Fatal(err)
	}
	stored, err := s.Marshal()
	if err != nil {
		f.Fatal(err)
	}
	f.Add("db-pass", []byte("hunter2"), stored)
	f.Add("", []byte{}, []byte(`{"v":1,"alg":"AES-256-GCM","key_id":"`+r.IDs()[1]+`","nonce":"AAAA","ciphertext":""}`))
	f.Add("x", []byte{0}, []byte(`{"v":2,"alg":"none"}`))
	f.Add("y", []byte("z"), []byte(`null`))
	f.Fuzz(func(t *testing.T, name string, value, stored []byte) {
		s, err := r.Seal(name, value)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		back, err := Unmarshal(b)
		if err != nil {
			t.Fatalf("Unmarshal(%s): %v", b, err)
		}
		if got, err := r.Open(name, back); err != nil || !bytes.Equal(got, value) {
			t.Fatalf("Open(Seal(%q)) = %q, %v", value, got, err)
		}
		if _, err := r.Open(name+"x", back); !errors.Is(err, ErrOpen) {
			t.Fatalf("a value sealed as %q opened as %q: %v", name, name+"x", err)
		}
		planted, err := Unmarshal(stored)
		if err != nil {
			return
		}
		if _, err := r.Open(name, planted); err != nil && !errors.Is(err, ErrOpen) && !errors.Is(err, ErrNoKey) && !strings.Contains(err.Error(), "unsupported format") {
			t.Fatalf("Open(%s): unexpected error %v", stored, err)
		}
	})
}

// FuzzParseRing reads arbitrary key files: one that is read holds a key
// for each line that is neither blank nor a comment, and one that is
// refused says which line is wrong, or that there is no key.
func FuzzParseRing(f *testing.F) {
	f.Add("# comment\n" + fuzzKey1 + "\n\n" + fuzzKey2 + "\n")
	f.Add(fuzzKey1 + "\r\n  # old\n")
	f.Add("AAAA\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, data string) {
		r, err := ParseRing([]byte(data))
		if err != nil {
			if !strings.Contains(err.Error(), "line ") && !strings.Contains(err.Error(), "no key") {
				t.Fatalf("refusal of %q names no line: %v", data, err)
			}
			return
		}
		keys := 0
		for line := range strings.Lines(data) {
			if l := strings.TrimSpace(line); l != "" && l[0] != '#' {
				keys++
			}
		}
		if len(r.IDs()) != keys {
			t.Fatalf("%d keys read from %q, which has %d", len(r.IDs()), data, keys)
		}
	})
}
