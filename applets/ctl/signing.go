package ctl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/state"
)

func signingCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "signing",
		Usage: "the key that signs the specs and routes ctl stores",
		Subcommands: []*ucli.Command{
			{
				Name: "keygen", Usage: "write a new signing key file (mode 0600) and print its public key", ArgsUsage: "FILE",
				Description: "Put the printed public key in [runner] trusted_keys and [gateway] trusted_keys of every node,\n" +
					"and FILE in [ctl] signing_key_file (or pass --signing-key FILE).",
				Action: action(stdio, false, signingKeygen),
			},
			{Name: "public", Usage: "print the public key of the signing key (--signing-key, [ctl] signing_key_file, else the data dir's signing.key)", Action: action(stdio, false, signingPublic)},
		},
	}
}

func signingKeygen(_ context.Context, c *ucli.Context, e *env) error {
	path, err := oneArg(c, "key file")
	if err != nil {
		return err
	}
	key, err := signing.Generate()
	if err != nil {
		return err
	}
	if err := signing.WriteKeyFile(path, key.File()); err != nil {
		return err
	}
	fmt.Fprintln(e.out(), key.Public())
	e.infof("signing key written to %s: add the public key above to trusted_keys in [runner] and [gateway] of every node, and set [ctl] signing_key_file = %q", path, path)
	return nil
}

func signingPublic(_ context.Context, _ *ucli.Context, e *env) error {
	if e.cfg.Ctl.SigningKeyFile == "" {
		// signer goes on without a node key it cannot use, but showing
		// that key is all this command does: why it cannot is the answer,
		// not "no signing key" beside a file that is there.
		path := filepath.Join(e.cfg.DataDir, signing.NodeKeyFile)
		if _, err := signing.LoadKey(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("read the node key in the data dir: %w", err)
		}
	}
	key, err := e.signer()
	if err != nil {
		return err
	}
	if key == nil {
		return usagef("no signing key: name it with --signing-key FILE or [ctl] signing_key_file, or run where narun up's data dir (--data-dir) holds %s", signing.NodeKeyFile)
	}
	fmt.Fprintln(e.out(), key.Public())
	return nil
}

// signer is the configured signing key, else the node key of narun up in
// the data dir when this user may read it; nil when there is neither, and
// ctl then stores values unsigned.
func (e *env) signer() (*signing.Key, error) {
	if e.cfg.Ctl.SigningKeyFile != "" {
		key, err := signing.LoadKey(e.cfg.Ctl.SigningKeyFile)
		if err == nil {
			return key, nil
		}
		from := e.signKeyFrom
		if from == "" {
			from = "[ctl] signing_key_file"
			if where := e.cfg.Where("ctl.signing_key_file"); where != "" {
				from += " at " + where
			}
		}
		// A file missing or unreadable is the usual first deploy from
		// another machine: the copy of the key not made yet, or made
		// as another user.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission) {
			return nil, fmt.Errorf("%s: %w (copy the node key, <data_dir>/signing.key of narun up, there, readable by this user only, or name a key the nodes trust)", from, err)
		}
		return nil, fmt.Errorf("%s: %w", from, err)
	}
	path := filepath.Join(e.cfg.DataDir, signing.NodeKeyFile)
	key, err := signing.LoadKey(path)
	switch {
	case errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission):
		// The node key is root's on a device run as root: another user's
		// ctl goes without it, and hears about it only where a node needs
		// it (deploy's warning).
		e.log.Debug("no node signing key", "file", path, "err", err)
		return nil, nil
	case err != nil:
		// Not "storing unsigned": deploy, restart and rollback go on to
		// a node key a heartbeat names (nodeSigner), and say so.
		e.warnf("%v; not signing with it", err)
		return nil, nil
	}
	return key, nil
}

// nodeSigner is key, else the node key of a narun up on this machine
// whose heartbeat names its file: ctl run without narun up's --data-dir
// finds it there. Only a file this user may read serves, and only one
// whose public key that node trusts. A heartbeat is anyone's to write on a
// default device, but a spoofed one only points ctl at a key file: ctl
// then signs with a key this user holds, which nodes trust or not by
// their own trusted_keys; the worst is a deploy they refuse, never one
// they would not have run otherwise.
// nodes are the heartbeats, read by the caller. Which node's key it is
// is said by the first seal, not here: a command that fails before it
// signs anything would read as one that stored something.
func (e *env) nodeSigner(key *signing.Key, nodes []state.Node) *signing.Key {
	if key != nil {
		return key
	}
	for _, n := range nodes {
		if !n.SignaturesRequired {
			continue
		}
		k, err := nodeKeyOf(n)
		if err != nil {
			e.log.Debug("node key of a heartbeat", "node", n.ID, "file", n.SigningKeyFile, "err", err)
			continue
		}
		if k != nil {
			e.unsaidNodeKey = fmt.Sprintf("%s (%s)", cli.Shown(n.ID), cli.Shown(n.SigningKeyFile))
			return k
		}
	}
	return nil
}

// nodeKeyOf is the node key whose file n's heartbeat names, when this
// user may read it and n trusts it; nil without an error when the
// heartbeat names none. The error says why it cannot be used, escaped: a
// heartbeat's path is anyone's to write.
func nodeKeyOf(n state.Node) (*signing.Key, error) {
	path := n.SigningKeyFile
	if !filepath.IsAbs(path) {
		return nil, nil
	}
	// Not a device or a pipe, which a read could wait on for ever.
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("the node key it names, %s, is not on this machine (pass a copy with --signing-key FILE)", cli.Shown(path))
	}
	if err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("the node key it names, %s, is not a regular file", cli.Shown(path))
	}
	var k *signing.Key
	if err == nil {
		k, err = signing.LoadKey(path)
	}
	if err != nil {
		return nil, fmt.Errorf("the node key it names cannot be used (%s; run ctl as the user that runs narun up, or pass a copy with --signing-key FILE)", cli.Shown(err.Error()))
	}
	if !slices.Contains(n.TrustedKeys, k.Public()) {
		return nil, fmt.Errorf("the node key it names, %s, is not one it trusts", cli.Shown(path))
	}
	return k, nil
}

// nodeKeyUnusable says, for the warning of a node that runs only signed
// specs, why ctl did not sign with the node key its heartbeat names
// (nodeSigner): that narun up's data dir is another user's, most often, or
// on another machine. "" when the heartbeat names none or the key serves.
func nodeKeyUnusable(n state.Node) string {
	if _, err := nodeKeyOf(n); err != nil {
		return ": " + err.Error()
	}
	return ""
}

// seal is the spec ctl stores for body: signed with a sequence after
// o.last, the highest key signed for the app before. It is cur, the
// stored spec, when key signed body there already with a sequence and
// nodes accept it (o.live): a deploy of an unchanged spec stores nothing,
// but one stored again after a later spec or a deletion is signed anew.
// A trailer or sequence line body has (a stored spec saved and deployed
// again) is dropped; without a key, body is stored unsigned, without a
// sequence.
func seal(key *signing.Key, body, cur []byte, o signedOrder) []byte {
	body = signing.StripSequence(signing.Strip(body))
	if key == nil {
		return body
	}
	if notOurs(key, cur) == "" && bytes.Equal(cur, o.live) {
		curBody := signing.Strip(cur)
		if seq, err := signing.Sequence(curBody); err == nil && seq > 0 && bytes.Equal(withNewline(signing.StripSequence(curBody)), withNewline(body)) {
			return cur
		}
	}
	return key.Sign(signing.WithSequence(body, signing.NextSequence(o.last, o.now)))
}

// seal is seal, saying first whose node key signs when nodeSigner chose
// one.
func (e *env) seal(key *signing.Key, body, cur []byte, o signedOrder) []byte {
	if key != nil && e.unsaidNodeKey != "" {
		e.infof("signing with the node key of %s", e.unsaidNodeKey)
		e.unsaidNodeKey = ""
	}
	return seal(key, body, cur, o)
}

// withNewline is b ending in a newline, as a signed body does.
func withNewline(b []byte) []byte {
	if len(b) > 0 && b[len(b)-1] != '\n' {
		return append(bytes.Clone(b), '\n')
	}
	return b
}

// signedOrder is what a key's history says of the values key signed.
type signedOrder struct {
	// last is the highest sequence key signed, 0 with none.
	last uint64
	// live is the value stored now when nodes that read the history
	// accept it: nil when it is not key's, or is a value key signed
	// before stored again after a later one or a deletion, which nodes
	// refuse (signing.Order) and ctl must not take for current.
	live []byte
	// now is the clock of the server that holds the bucket, when its
	// history was read: a new sequence counts its milliseconds, so that
	// operators with keys of their own sign on one clock, not on their
	// machines', which may be days apart or at 1970.
	now time.Time
}

// readOrder reads the order of the values key signed for name in kv:
// its value and the earlier ones kv keeps, deleted ones included, so that
// the next value comes after them on every node that accepted one, even
// from a machine whose clock is behind. seqOf reads a value's body. Zero
// without a key: an unsigned value has no sequence.
func (e *env) readOrder(ctx context.Context, kv jetstream.KeyValue, name string, key *signing.Key, seqOf func(body []byte) uint64) (signedOrder, error) {
	if key == nil {
		return signedOrder{}, nil
	}
	now := e.bucketNow(ctx, kv)
	octx, cancel := e.op(ctx)
	defer cancel()
	hist, err := kv.History(octx, name)
	if isNotFound(err) {
		return signedOrder{now: now}, nil
	}
	if err != nil {
		return signedOrder{}, majorityHint(e.nc, fmt.Errorf("read the history of %s in %s: %w", name, kv.Bucket(), err))
	}
	values := make([][]byte, len(hist))
	for i, en := range hist {
		if en.Operation() == jetstream.KeyValuePut {
			values[i] = append([]byte{}, en.Value()...)
		}
	}
	o := e.orderOf(kv.Bucket(), name, key, values, seqOf)
	o.now = now
	return o, nil
}

// orderOf follows values, the history of name in bucket from oldest to
// newest (nil for a deletion, a put never is), as a node trusting key
// does. Only what key signed counts: a value planted with a huge
// sequence must not push ctl's. When the value stored now is one key
// signed that such a node refuses, it says so: narun ctl never stores
// one, so something else did.
func (e *env) orderOf(bucket, name string, key *signing.Key, values [][]byte, seqOf func(body []byte) uint64) signedOrder {
	var o signedOrder
	// In memory only: an Order without a file cannot fail.
	nodes, _ := signing.LoadOrder("")
	var refused error
	for _, v := range values {
		o.live, refused = nil, nil
		if v == nil {
			_ = nodes.Delete(name)
			continue
		}
		if notOurs(key, v) != "" {
			continue
		}
		seq := seqOf(signing.Strip(v))
		o.last = max(o.last, seq)
		if refused = nodes.Check(name, seq, v); refused == nil {
			_ = nodes.Accept(name, seq, v)
			o.live = v
		}
	}
	if refused != nil {
		e.warnf("%s in %s holds a value this ctl's key signed before, stored again, which nodes refuse (%v): something other than narun ctl wrote it", name, bucket, refused)
	}
	return o
}

// specSequence is the sequence of a spec's body, 0 when it has none.
func specSequence(body []byte) uint64 {
	seq, _ := signing.Sequence(body)
	return seq
}

// entrySequence reads the sequence of an entry of app's routes.
func entrySequence(app string) func(body []byte) uint64 {
	return func(body []byte) uint64 {
		e, err := gateway.DecodeEntry(app, body)
		if err != nil {
			return 0
		}
		return e.Sequence
	}
}

// refuseUnsigned refuses to rewrite a signed stored value without a key:
// nodes that trust keys would refuse the unsigned result.
func refuseUnsigned(key *signing.Key, stored []byte, what string) error {
	if key != nil {
		return nil
	}
	if pub, _ := signing.SignedBy(stored); pub != "" {
		return fmt.Errorf("%s is signed by %s and no signing key is configured: nodes that trust that key would refuse an unsigned one; set [ctl] signing_key_file (or --signing-key FILE)", what, pub)
	}
	return nil
}

// notOurs says why value is not signed by key ("unsigned", "signed by X",
// "changed after it was signed"), "" when it is or ctl has no key. Any app
// may write narun's buckets on a default device: a stored value only this
// key's signature vouches for is one narun ctl wrote, and ctl builds on
// no other, or signing it would launder what an app planted.
func notOurs(key *signing.Key, value []byte) string {
	if key == nil {
		return ""
	}
	switch pub, err := signing.SignedBy(value); {
	case pub == "":
		return "unsigned"
	case pub != key.Public():
		return "signed by " + pub
	case err != nil:
		return "changed after it was signed"
	}
	return ""
}

// notOurSpec refuses to build on the stored spec of app, which notOurs
// found is not this ctl's for reason.
func notOurSpec(app, reason string) error {
	return fmt.Errorf("the stored spec of %s is not signed by this ctl's key (%s): it may have been written by something other than narun ctl; deploy it from its file with --binary to replace it", app, reason)
}

// warnRepinned names each file object whose pin changes from prev to next:
// files put then a restart is the way to change one, but so is an app
// replacing the object, which the operator should hear about.
func (e *env) warnRepinned(prev, next map[string]string) {
	for _, obj := range slices.Sorted(maps.Keys(next)) {
		if old, ok := prev[obj]; ok && old != next[obj] {
			e.warnf("file %s changed since the last deploy: pinning its new content (sha256 %s… → %s…); if you did not run narun ctl files put for it, something else replaced it", obj, prefix(old), prefix(next[obj]))
		}
	}
}

func prefix(digest string) string {
	return digest[:min(12, len(digest))]
}
