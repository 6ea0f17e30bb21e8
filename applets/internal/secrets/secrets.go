// Package secrets encrypts app secrets before they leave the operator's
// machine and decrypts them on the node that runs the app. Values are sealed
// with AES-256-GCM and the secret's name as associated data, so a ciphertext
// copied under another name does not open. Each sealed value names the key
// it was sealed with, which lets a key ring hold old keys while secrets are
// re-encrypted under a new one (rotation).
//
// A key file holds one key per line, base64 of 32 random bytes; '#' starts a
// comment. The first key seals, every key opens. The file must not be
// readable by group or others.
package secrets

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"
)

// Algorithm is the only sealing algorithm.
const Algorithm = "AES-256-GCM"

// ErrNoKey means no key of the ring matches the key id of a sealed value.
var ErrNoKey = errors.New("secret sealed with a key that is not in the key file")

// ErrOpen means a sealed value did not authenticate: wrong key, wrong name
// or tampered ciphertext.
var ErrOpen = errors.New("secret does not decrypt (wrong key, wrong name or tampered)")

// key is one AES-256 key with its id.
type key struct {
	id  string
	aes cipher.AEAD
}

// Ring is a set of keys; the first one seals.
type Ring struct {
	keys []key
}

// Sealed is the stored form of a secret, the JSON value in narun-secrets.
type Sealed struct {
	Version    int       `json:"v"`
	Alg        string    `json:"alg"`
	KeyID      string    `json:"key_id"`
	Nonce      []byte    `json:"nonce"`
	Ciphertext []byte    `json:"ciphertext"`
	Updated    time.Time `json:"updated"`
}

// NewKey returns a fresh key as a key-file line.
func NewKey() (string, error) {
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		return "", fmt.Errorf("generate key: %w", err)
	}
	return base64.StdEncoding.EncodeToString(k[:]), nil
}

// KeyID is the public id of a raw key: a digest prefix that reveals nothing
// about the key but tells keys apart.
func KeyID(raw []byte) string {
	sum := sha256.Sum256(append([]byte("narun-secret-key\x00"), raw...))
	return hex.EncodeToString(sum[:6])
}

// ParseRing reads key-file content.
func ParseRing(data []byte) (*Ring, error) {
	r := &Ring{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	n := 1
	for ; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		raw, err := base64.StdEncoding.DecodeString(line)
		if err != nil || len(raw) != 32 {
			return nil, fmt.Errorf("key file line %d: want base64 of 32 bytes (narun ctl secret keygen writes one)", n)
		}
		block, err := aes.NewCipher(raw)
		if err != nil {
			return nil, fmt.Errorf("key file line %d: %w", n, err)
		}
		gcm, err := cipher.NewGCM(block)
		if err != nil {
			return nil, fmt.Errorf("key file line %d: %w", n, err)
		}
		r.keys = append(r.keys, key{id: KeyID(raw), aes: gcm})
	}
	// A line too long to scan would otherwise end the file there, and
	// leave out the keys after it.
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("key file line %d: %w", n, err)
	}
	if len(r.keys) == 0 {
		return nil, errors.New("key file holds no key")
	}
	return r, nil
}

// LoadRing reads a key file, refusing one that others can read.
func LoadRing(path string) (*Ring, error) {
	if path == "" {
		return nil, errors.New("no key file configured (set master_key_file or --key-file)")
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open key file: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat key file: %w", err)
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("key file %s has mode %04o: allow only its owner (chmod 600)", path, st.Mode().Perm())
	}
	var buf bytes.Buffer
	if _, err := buf.ReadFrom(f); err != nil {
		return nil, fmt.Errorf("read key file: %w", err)
	}
	r, err := ParseRing(buf.Bytes())
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return r, nil
}

// PrimaryID is the id of the key that seals.
func (r *Ring) PrimaryID() string { return r.keys[0].id }

// IDs lists the ids of all keys, primary first.
func (r *Ring) IDs() []string {
	ids := make([]string, len(r.keys))
	for i, k := range r.keys {
		ids[i] = k.id
	}
	return ids
}

// Seal encrypts value for the secret called name with the primary key.
func (r *Ring) Seal(name string, value []byte) (*Sealed, error) {
	k := r.keys[0]
	nonce := make([]byte, k.aes.NonceSize())
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("seal secret %q: %w", name, err)
	}
	return &Sealed{
		Version:    1,
		Alg:        Algorithm,
		KeyID:      k.id,
		Nonce:      nonce,
		Ciphertext: k.aes.Seal(nil, nonce, value, []byte(name)),
		Updated:    time.Now().UTC(),
	}, nil
}

// Open decrypts the sealed value of the secret called name.
func (r *Ring) Open(name string, s *Sealed) ([]byte, error) {
	if s.Version != 1 || s.Alg != Algorithm {
		return nil, fmt.Errorf("open secret %q: unsupported format v%d %s", name, s.Version, s.Alg)
	}
	for _, k := range r.keys {
		if k.id != s.KeyID {
			continue
		}
		if len(s.Nonce) != k.aes.NonceSize() {
			return nil, fmt.Errorf("open secret %q: %w", name, ErrOpen)
		}
		v, err := k.aes.Open(nil, s.Nonce, s.Ciphertext, []byte(name))
		if err != nil {
			return nil, fmt.Errorf("open secret %q: %w", name, ErrOpen)
		}
		return v, nil
	}
	return nil, &NoKeyError{Name: name, KeyID: s.KeyID}
}

// NoKeyError is Open's error for a secret sealed with a key the ring
// lacks: it names the secret, so that a caller can say what to do of each.
// It is ErrNoKey to errors.Is.
type NoKeyError struct {
	Name, KeyID string
}

func (e *NoKeyError) Error() string {
	return fmt.Sprintf("open secret %q (key %s): %v", e.Name, e.KeyID, ErrNoKey)
}

func (e *NoKeyError) Unwrap() error { return ErrNoKey }

// Marshal is the JSON stored in narun-secrets.
func (s *Sealed) Marshal() ([]byte, error) { return json.Marshal(s) }

// Unmarshal reads a value of narun-secrets.
func Unmarshal(data []byte) (*Sealed, error) {
	var s Sealed
	if err := json.Unmarshal(data, &s); err != nil {
		return nil, fmt.Errorf("decode sealed secret: %w", err)
	}
	return &s, nil
}
