package signing

import (
	"bytes"
	"strings"
	"testing"
)

// fuzzKey is a fixed key, so that a failing input reproduces.
func fuzzKey(t testing.TB) *Key {
	k, err := ParseKey([]byte(seedPrefix + strings.Repeat("A", 43)))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// FuzzSignVerify signs arbitrary values and checks arbitrary ones: a
// signed value verifies, its body is what Strip leaves and what Verify
// returns, signing again changes nothing, a body changed after signing
// is refused, and whatever a verifier accepts is the value stripped of its
// trailer.
func FuzzSignVerify(f *testing.F) {
	k := fuzzKey(f)
	f.Add([]byte("name = \"hello\"\n"), []byte(""), uint16(3))
	f.Add([]byte(`[{"path":"/"}]`), k.Sign([]byte("x\n")), uint16(0))
	f.Add([]byte("a\n"+trailerPrefix+"narun-ed25519:AAAA sig\n"), []byte(trailerPrefix+k.Public()+" x"), uint16(1))
	f.Add([]byte("\n\n"), []byte("body\n"+trailerPrefix+k.Public()+" \n"), uint16(9))
	f.Add([]byte("x\n"), append(bytes.TrimSuffix(k.Sign([]byte("x\n")), []byte("\n")), "\r\n"...), uint16(2))
	f.Fuzz(func(t *testing.T, value, other []byte, at uint16) {
		v, err := NewVerifier("trusted_keys", []string{k.Public()})
		if err != nil {
			t.Fatal(err)
		}
		body := Strip(value)
		if len(body) > 0 && body[len(body)-1] != '\n' {
			body = append(bytes.Clone(body), '\n')
		}
		signed := k.Sign(value)
		if got := Strip(signed); !bytes.Equal(got, body) {
			t.Fatalf("Strip(Sign(%q)) = %q, want %q", value, got, body)
		}
		if got, err := v.Verify(signed); err != nil || !bytes.Equal(got, body) {
			t.Fatalf("Verify(Sign(%q)) = %q, %v; want %q", value, got, err, body)
		}
		if pub, err := SignedBy(signed); pub != k.Public() || err != nil {
			t.Fatalf("SignedBy(Sign(%q)) = %q, %v", value, pub, err)
		}
		if again := k.Sign(signed); !bytes.Equal(again, signed) {
			t.Fatalf("signing %q twice gives %q, then %q", value, signed, again)
		}
		if len(body) > 0 {
			tampered := bytes.Clone(signed)
			tampered[int(at)%len(body)] ^= 1
			if _, err := v.Verify(tampered); err == nil {
				t.Fatalf("Verify accepted %q, changed after signing", tampered)
			}
		}
		got, err := v.Verify(other)
		if err == nil && !bytes.Equal(got, Strip(other)) {
			t.Fatalf("Verify(%q) = %q, not the value without its trailer", other, got)
		}
		// Only what Sign writes verifies (its final newline aside), or
		// byte strings that differ would pass as one signed value.
		if resigned := k.Sign(got); err == nil && !bytes.Equal(other, resigned) && !bytes.Equal(other, resigned[:len(resigned)-1]) {
			t.Fatalf("Verify accepted %q, which Sign writes as %q", other, resigned)
		}
		if pub, err := SignedBy(other); strings.ContainsFunc(pub, func(r rune) bool { return r < 0x20 || r == 0x7f }) {
			t.Fatalf("SignedBy(%q) = %q, %v: control characters of the value come back to be printed", other, pub, err)
		}
	})
}

// FuzzParseKey reads arbitrary key files and public keys: a key file read
// is the key its own File writes, and a public key accepted is one that
// a verifier can trust.
func FuzzParseKey(f *testing.F) {
	k := fuzzKey(f)
	f.Add(string(k.File()), k.Public())
	f.Add(seedPrefix+"!!", publicPrefix)
	f.Add("  "+seedPrefix+strings.Repeat("_", 43)+"\n\n", publicPrefix+strings.Repeat("-", 43))
	f.Fuzz(func(t *testing.T, file, public string) {
		if k, err := ParseKey([]byte(file)); err == nil {
			again, err := ParseKey(k.File())
			if err != nil || again.Public() != k.Public() {
				t.Fatalf("key of %q does not read back from its file %q: %v", file, k.File(), err)
			}
			if CheckPublic(k.Public()) != nil {
				t.Fatalf("public key %q of %q refused", k.Public(), file)
			}
		}
		if err := CheckPublic(public); err == nil {
			if _, err := NewVerifier("trusted_keys", []string{public}); err != nil {
				t.Fatalf("CheckPublic accepts %q, NewVerifier does not: %v", public, err)
			}
		} else if !strings.Contains(err.Error(), "public key") && !strings.Contains(err.Error(), publicPrefix) {
			t.Fatalf("refusal of %q does not say what is wanted: %v", public, err)
		}
	})
}
