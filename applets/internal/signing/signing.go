// Package signing signs what narun ctl stores for nodes to run (app specs,
// route entries) and checks those signatures on the nodes.
//
// NATS permissions decide who may publish to narun's buckets, but
// nats-server also writes to a subject for a client: JetStream sends a
// direct get's answer, a push consumer's deliveries and a stream's
// republished messages to whatever subject the client names. A login kept
// off narun's subjects can therefore still have the server write a spec
// (docs/SECURITY.md, "The app role"). A signature made with a key only
// operators hold makes such a spec worthless: a runner that trusts keys
// runs only what one of them signed.
//
// A signed value is the value followed by one trailer line,
//
//	# narun-signature: narun-ed25519:<public key> <signature>
//
// both base64 (URL alphabet, no padding), the signature an Ed25519 one over
// every byte before the trailer. The trailer is a TOML comment, so a spec
// reads the same to a runner that checks nothing; a JSON value (a route
// entry) is read with Strip first.
package signing

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"

	"github.com/narun/narun/applets/internal/atomicfile"
)

// NodeKeyFile is the key narun up creates in its data dir and trusts
// unless trusted_keys are configured; narun ctl signs with it when it can
// read it and no signing_key_file is named.
const NodeKeyFile = "signing.key"

const (
	trailerPrefix = "# narun-signature: "
	publicPrefix  = "narun-ed25519:"
	seedPrefix    = "narun-ed25519-seed:"
)

var b64 = base64.RawURLEncoding

// Key signs.
type Key struct {
	priv ed25519.PrivateKey
}

// Generate returns a new key.
func Generate() (*Key, error) {
	seed := make([]byte, ed25519.SeedSize)
	if _, err := rand.Read(seed); err != nil {
		return nil, fmt.Errorf("generate signing key: %w", err)
	}
	return &Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// File is the text of k's key file, which ParseKey reads.
func (k *Key) File() []byte {
	return []byte(seedPrefix + b64.EncodeToString(k.priv.Seed()) + "\n")
}

// ParseKey reads the text of a key file.
func ParseKey(text []byte) (*Key, error) {
	enc, ok := strings.CutPrefix(strings.TrimSpace(string(text)), seedPrefix)
	if !ok {
		return nil, fmt.Errorf("not a narun signing key: want a line starting %q", seedPrefix)
	}
	seed, err := b64.DecodeString(enc)
	if err != nil || len(seed) != ed25519.SeedSize {
		return nil, errors.New("not a narun signing key: the seed is not 32 bytes of base64")
	}
	return &Key{priv: ed25519.NewKeyFromSeed(seed)}, nil
}

// LoadKey reads a key file, refusing one that others can read: whoever
// reads it may deploy to every node that trusts it.
func LoadKey(path string) (*Key, error) {
	// Opened without blocking and checked on the descriptor: ctl reads the
	// file a node's heartbeat names, and anyone on NATS may write one. A
	// FIFO there, or one swapped in after a check of the path, would
	// otherwise hold ctl in a read that never ends.
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("signing key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("signing key %s is not a regular file (%s)", path, st.Mode().Type())
	}
	if st.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("signing key %s has mode %04o: allow only its owner (chmod 600)", path, st.Mode().Perm())
	}
	text, err := io.ReadAll(io.LimitReader(f, maxKeyFile))
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	k, err := ParseKey(text)
	if err != nil {
		return nil, fmt.Errorf("signing key %s: %w", path, err)
	}
	return k, nil
}

// maxKeyFile is far more than a key file holds, and bounds what a large
// file named as one costs to read.
const maxKeyFile = 4 << 10

// WriteKeyFile writes a key file that appears whole or not at all, and
// never replaces one: a lost signing key cannot sign again for the nodes
// that trust it.
func WriteKeyFile(path string, content []byte) error {
	err := atomicfile.Create(path, content, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("key file %s exists; it is not replaced (nodes may trust it): choose another name", path)
	}
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	return nil
}

// Public is the key's public half as runners and gateways list it in
// trusted_keys.
func (k *Key) Public() string {
	return publicPrefix + b64.EncodeToString(k.priv.Public().(ed25519.PublicKey))
}

// Sign returns value with a trailer of this key, replacing any trailer it
// had. A value that does not end in a newline gets one first, so that the
// trailer is a line of its own.
func (k *Key) Sign(value []byte) []byte {
	body := Strip(value)
	if len(body) > 0 && body[len(body)-1] != '\n' {
		body = append(bytes.Clone(body), '\n')
	}
	sig := ed25519.Sign(k.priv, body)
	out := make([]byte, 0, len(body)+len(trailerPrefix)+len(publicPrefix)+150)
	out = append(out, body...)
	out = append(out, trailerPrefix...)
	out = append(out, k.Public()...)
	out = append(out, ' ')
	out = append(out, b64.EncodeToString(sig)...)
	return append(out, '\n')
}

// Strip returns value without its trailer, if it has one.
func Strip(value []byte) []byte {
	body, _, ok := split(value)
	if !ok {
		return value
	}
	return body
}

// split cuts value into the signed body and the trailer's text after its
// prefix.
func split(value []byte) (body []byte, trailer string, ok bool) {
	v := bytes.TrimSuffix(value, []byte("\n"))
	i := bytes.LastIndexByte(v, '\n')
	if !bytes.HasPrefix(v[i+1:], []byte(trailerPrefix)) {
		return value, "", false
	}
	return value[:i+1], string(v[i+1+len(trailerPrefix):]), true
}

// SignedBy returns the public key value's trailer names, "" when value is
// not signed, and whether that key's signature matches the value: a
// status must not vouch for a value changed after it was signed. What
// names no key comes back quoted: whoever wrote the value chose those
// bytes, and callers print them.
func SignedBy(value []byte) (pub string, err error) {
	_, trailer, ok := split(value)
	if !ok {
		return "", nil
	}
	pub, _, _ = strings.Cut(trailer, " ")
	v, err := NewVerifier("signature", []string{pub})
	if err != nil {
		return strconv.Quote(pub), err
	}
	_, err = v.Verify(value)
	return pub, err
}

// Verifier checks signatures against trusted public keys.
type Verifier struct {
	trusted map[string]ed25519.PublicKey
}

// NewVerifier trusts the listed public keys (Key.Public's form). key names
// the setting in errors. No keys gives a verifier that checks nothing.
func NewVerifier(key string, public []string) (*Verifier, error) {
	v := &Verifier{trusted: map[string]ed25519.PublicKey{}}
	for i, p := range public {
		pub, err := parsePublic(p)
		if err != nil {
			return nil, fmt.Errorf("%s[%d]: %w", key, i, err)
		}
		v.trusted[p] = pub
	}
	return v, nil
}

// CheckPublic says what is wrong with p as a public key of trusted_keys,
// so that a configuration is refused before anything starts.
func CheckPublic(p string) error {
	_, err := parsePublic(p)
	return err
}

func parsePublic(p string) (ed25519.PublicKey, error) {
	enc, ok := strings.CutPrefix(p, publicPrefix)
	if !ok {
		return nil, fmt.Errorf("%q: want %s<base64>, as narun ctl signing public prints", p, publicPrefix)
	}
	raw, err := b64.DecodeString(enc)
	// The decoder skips line breaks: a key with one would be trusted, and
	// printed, as another string than the key's.
	if err != nil || len(raw) != ed25519.PublicKeySize || b64.EncodeToString(raw) != enc {
		return nil, fmt.Errorf("%q: not a 32-byte Ed25519 public key in base64", p)
	}
	return ed25519.PublicKey(raw), nil
}

// Enabled reports whether v checks anything.
func (v *Verifier) Enabled() bool { return v != nil && len(v.trusted) > 0 }

// Verify returns value's body when a trusted key signed it. A verifier
// that trusts no key returns the body of any value.
func (v *Verifier) Verify(value []byte) ([]byte, error) {
	body, trailer, ok := split(value)
	if !v.Enabled() {
		return body, nil
	}
	if !ok {
		return nil, errors.New("not signed, and this node runs only what a trusted key signed (sign with narun ctl's signing_key_file)")
	}
	pub, sig, _ := strings.Cut(trailer, " ")
	key, trusted := v.trusted[pub]
	if !trusted {
		return nil, fmt.Errorf("signed by %s, which this node does not trust (trusted_keys)", pub)
	}
	// Only the text Sign writes is a signature: the decoder skips \r and
	// \n and ignores the last character's unused bits, so decoding alone
	// would let several byte strings verify as one signed value.
	raw, err := b64.DecodeString(sig)
	if err != nil || len(raw) != ed25519.SignatureSize || b64.EncodeToString(raw) != sig {
		return nil, fmt.Errorf("signature of %s is not the base64 signature narun ctl writes (%d characters of the URL alphabet, nothing else on the line)", pub, b64.EncodedLen(ed25519.SignatureSize))
	}
	if !ed25519.Verify(key, body, raw) {
		return nil, fmt.Errorf("signature of %s does not match the value: changed after it was signed", pub)
	}
	return body, nil
}
