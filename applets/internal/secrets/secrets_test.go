package secrets

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/embednats/natstest"
)

func ring(t testing.TB, lines ...string) *Ring {
	t.Helper()
	r, err := ParseRing([]byte(strings.Join(lines, "\n")))
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func newKey(t testing.TB) string {
	t.Helper()
	k, err := NewKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	r := ring(t, "# comment", k1)
	s, err := r.Seal("db-pass", []byte("hunter2"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := s.Marshal()
	if strings.Contains(string(b), "hunter2") {
		t.Fatal("plaintext in stored form")
	}
	s2, err := Unmarshal(b)
	if err != nil {
		t.Fatal(err)
	}
	v, err := r.Open("db-pass", s2)
	if err != nil || string(v) != "hunter2" {
		t.Fatalf("open: %q %v", v, err)
	}

	tests := []struct {
		name   string
		ring   *Ring
		secret string
		mutate func(*Sealed)
		want   error
	}{
		{"other name (AAD)", r, "other", nil, ErrOpen},
		{"other key", ring(t, k2), "db-pass", nil, ErrNoKey},
		{"tampered", r, "db-pass", func(s *Sealed) { s.Ciphertext[0] ^= 1 }, ErrOpen},
		{"short nonce", r, "db-pass", func(s *Sealed) { s.Nonce = s.Nonce[:4] }, ErrOpen},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _ := Unmarshal(b)
			if tc.mutate != nil {
				tc.mutate(c)
			}
			_, err := tc.ring.Open(tc.secret, c)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
}

func TestParseRingRejects(t *testing.T) {
	for _, src := range []string{"", "# only a comment\n", "not base64!", "c2hvcnQ="} {
		if _, err := ParseRing([]byte(src)); err == nil {
			t.Errorf("accepted %q", src)
		}
	}
}

func TestLoadRingPermissions(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "key")
	if err := os.WriteFile(p, []byte(newKey(t)+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRing(p); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("world-readable key file accepted: %v", err)
	}
	if err := os.Chmod(p, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadRing(p); err != nil {
		t.Fatal(err)
	}
}

// secretsKV is narun-secrets on a new server.
func secretsKV(t *testing.T) jetstream.KeyValue {
	t.Helper()
	js, err := jetstream.New(natstest.Connect(t, natstest.Start(t)))
	if err != nil {
		t.Fatal(err)
	}
	kv, err := store.KV(context.Background(), js, names.SecretsBucket, nil)
	if err != nil {
		t.Fatal(err)
	}
	return kv
}

func TestRotate(t *testing.T) {
	ctx := context.Background()
	kv := secretsKV(t)
	old, fresh := newKey(t), newKey(t)
	oldRing := ring(t, old)
	for _, n := range []string{"a", "b"} {
		if err := Put(ctx, kv, oldRing, n, []byte("value-"+n)); err != nil {
			t.Fatal(err)
		}
	}
	both := ring(t, fresh, old)
	done, current, err := Rotate(ctx, kv, both, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(done) != 2 || len(current) != 0 {
		t.Fatalf("rotated %v, already current %v", done, current)
	}
	newOnly := ring(t, fresh)
	for _, n := range []string{"a", "b"} {
		v, err := get(ctx, kv, newOnly, n)
		if err != nil || string(v) != "value-"+n {
			t.Fatalf("after rotation %s: %q %v", n, v, err)
		}
		if _, err := get(ctx, kv, oldRing, n); !errors.Is(err, ErrNoKey) {
			t.Fatalf("old key still opens %s: %v", n, err)
		}
	}
	done, current, err = Rotate(ctx, kv, both, 0)
	slices.Sort(current)
	if err != nil || len(done) != 0 || !slices.Equal(current, []string{"a", "b"}) {
		t.Fatalf("second rotation rewrote %v, found current %v (%v); want none rewritten, a and b current", done, current, err)
	}
}

// A value that does not open, which any app may plant in narun-secrets,
// is named in the error but does not keep the other secrets under the
// key being retired.
func TestRotatePastValuesThatDoNotOpen(t *testing.T) {
	ctx := context.Background()
	kv := secretsKV(t)
	old, fresh := newKey(t), newKey(t)
	oldRing := ring(t, old)
	// Stored first, so listed first.
	if _, err := kv.Put(ctx, "planted", []byte(`{"v":1,"alg":"AES-256-GCM","key_id":"`+oldRing.PrimaryID()+`","nonce":"AAAAAAAAAAAAAAAA","ciphertext":"AAAA"}`)); err != nil {
		t.Fatal(err)
	}
	if err := Put(ctx, kv, oldRing, "db", []byte("value")); err != nil {
		t.Fatal(err)
	}
	done, _, err := Rotate(ctx, kv, ring(t, fresh, old), 0)
	if err == nil || !strings.Contains(err.Error(), `"planted"`) {
		t.Errorf("rotation error %v does not name the value that does not open", err)
	}
	if len(done) != 1 || done[0] != "db" {
		t.Errorf("rotated %v, want [db]", done)
	}
	if v, err := get(ctx, kv, ring(t, fresh), "db"); err != nil || string(v) != "value" {
		t.Errorf("db after rotation, with the new key only: %q %v", v, err)
	}
}

// A line too long for the scanner once ended the file there without an
// error: the keys after it were left out, and a ring without them failed
// later with ErrNoKey, far from the cause.
func TestParseRingLongLine(t *testing.T) {
	k1, k2 := newKey(t), newKey(t)
	_, err := ParseRing([]byte(k1 + "\n#" + strings.Repeat("x", 70000) + "\n" + k2 + "\n"))
	if err == nil || !strings.Contains(err.Error(), "line 2") {
		t.Fatalf("ParseRing of a file with a 70000-byte line: %v, want an error naming line 2", err)
	}
}

// get fetches and opens the secret called name, as a node does with the
// value it caches.
func get(ctx context.Context, kv jetstream.KeyValue, r *Ring, name string) ([]byte, error) {
	e, err := kv.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	s, err := Unmarshal(e.Value())
	if err != nil {
		return nil, err
	}
	return r.Open(name, s)
}
