package ctl

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/atomicfile"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/elfarch"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/secrets"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/store"
)

// maxSecret keeps a secret well inside one NATS message.
const maxSecret = 512 << 10

func secretCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "secret",
		Usage: "encrypted secrets in " + names.SecretsBucket,
		Subcommands: []*ucli.Command{
			{
				Name: "set", Usage: "encrypt and store a secret read from stdin or --from-file", ArgsUsage: "NAME",
				Description: "The value is never taken from the command line. From stdin one trailing newline is dropped;\n" +
					"--from-file is stored byte for byte.",
				Flags:  []ucli.Flag{&ucli.StringFlag{Name: "from-file", Usage: "read the value from this file"}},
				Action: action(stdio, false, secretSet),
			},
			{Name: "list", Aliases: []string{"ls"}, Usage: "secret names, key ids and the apps that use them (no values)", Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, secretList)},
			{
				Name: "delete", Aliases: []string{"rm"}, Usage: "delete secrets no deployed spec uses", ArgsUsage: "NAME...",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: flagForce, Usage: "delete even if a deployed spec uses it"}},
				Action: action(stdio, true, secretDelete),
			},
			{
				Name: "rotate", Usage: "re-encrypt every secret with the first key of the key file",
				Description: "Rotation: 1) narun ctl secret keygen --key-file K --add puts a new key first in K;\n" +
					"2) copy K to every node (old keys still open old secrets);\n" +
					"3) narun ctl secret rotate --key-file K re-encrypts every secret with it;\n" +
					"4) remove the old key lines from K on ctl and the nodes.",
				Action: action(stdio, false, secretRotate),
			},
			{
				Name: "keygen", Usage: "write a new key file (mode 0600), or add a new first key with --add",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: "add", Usage: "put a new key first in an existing key file, keeping the old ones"}},
				Action: action(stdio, false, secretKeygen),
			},
		},
	}
}

// ring loads the key file, until ctx ends: it may be a FIFO, or <(pass
// show ...), whose open waits for a writer.
func (e *env) ring(ctx context.Context) (*secrets.Ring, error) {
	path := e.cfg.Ctl.MasterKeyFile
	if path == "" {
		// A usage error, as for secret keygen and signing public: what is
		// missing is part of the command line or its configuration.
		return nil, usagef("no secrets key file: name it with --key-file (or [ctl] master_key_file); narun ctl secret keygen --key-file FILE makes one")
	}
	ring, err := readInterruptible(ctx, "key file", path, func() (*secrets.Ring, error) { return secrets.LoadRing(path) })
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("%w: narun ctl secret keygen --key-file %s makes one", err, path)
	}
	return ring, err
}

func secretSet(ctx context.Context, c *ucli.Context, e *env) error {
	if c.NArg() > 1 {
		return usagef("secret set takes only NAME: the value is read from stdin or --from-file, never from the command line")
	}
	name, err := oneArg(c, "secret name")
	if err != nil {
		return err
	}
	if before, _, ok := strings.Cut(name, "="); ok {
		// NAME=VALUE, as env files write it: the value is on the command
		// line already, and need not reach a log a second time.
		return usagef("secret name %q=...: secret set takes NAME alone, and reads the value from stdin or --from-file, never from the command line", before)
	}
	if err := spec.ValidObjectName(name); err != nil {
		return usagef("secret name %q: %v", name, err)
	}
	// A script's variable left unset: read as no flag, the value would be
	// whatever the script's stdin holds.
	if c.IsSet("from-file") && c.String("from-file") == "" {
		return usagef("--from-file is empty: name the file that holds the value, or leave the flag out to read stdin")
	}
	ring, err := e.ring(ctx)
	if err != nil {
		return err
	}
	// Connected once the command line and the key file are known to be
	// good (a usage error is not a connection error), but before the value
	// is asked for: nobody should type a secret that cannot be stored.
	if err := e.connect(); err != nil {
		return err
	}
	defer e.close()
	var value []byte
	if p := c.String("from-file"); p != "" {
		value, err = readInterruptible(ctx, "secret value", p, func() ([]byte, error) { return readLimited(p, nil) })
	} else {
		if e.stdio.Stdin == nil {
			return usagef("no value: pipe it to stdin or pass --from-file")
		}
		if isTerminal(e.stdio.Stdin) {
			fmt.Fprintf(e.stdio.Stderr, "value of %s (input is visible; end with Ctrl-D):\n", name)
		}
		value, err = readInterruptible(ctx, "secret value", "", func() ([]byte, error) { return readLimited("stdin", e.stdio.Stdin) })
		// One line ending, "\n" or "\r\n": a lone "\r" is the value's.
		if v, ok := bytes.CutSuffix(value, []byte("\n")); ok {
			value = bytes.TrimSuffix(v, []byte("\r"))
		}
	}
	if err != nil {
		return err
	}
	if len(value) == 0 {
		return usagef("secret %s: empty value", name)
	}
	kv, err := e.kv(ctx, names.SecretsBucket)
	if err != nil {
		return err
	}
	if err := e.write(ctx, names.SecretsBucket, func(ctx context.Context) error { return secrets.Put(ctx, kv, ring, name, value) }); err != nil {
		// [nats] max_payload may be a quarter of what maxSecret seals to:
		// nats.go's bare "maximum payload exceeded" says neither what
		// fits nor which setting decides it.
		if mp := e.nc.MaxPayload(); errors.Is(err, nats.ErrMaxPayload) {
			return fmt.Errorf("secret %s: %d bytes, sealed, is more than the NATS server takes in one message (%d bytes, [nats] max_payload): store at most %d bytes, or raise max_payload: %w", name, len(value), mp, sealedFits(ring, name, mp), err)
		}
		return err
	}
	if err := e.dropEarlierSealed(ctx, name, "set it again"); err != nil {
		return err
	}
	fmt.Fprintf(e.out(), "secret %s stored (key %s)\n", name, ring.PrimaryID())
	// Only read: secret set makes no bucket of specs.
	ro := e.readOnly
	e.readOnly = true
	e.nameAppsToRestart(ctx, name, secretRefs, "running instances keep the value they started with")
	e.readOnly = ro
	e.warnNodesLackKey(ctx, []string{name}, ring.PrimaryID())
	return nil
}

// sealedFits is the size of the largest value of the secret called name
// whose sealed form takes at most maxPayload bytes: base64 of the value
// and its 16-byte tag, in JSON whose time may take up to 10 bytes more
// than that of the seal measured here.
func sealedFits(ring *secrets.Ring, name string, maxPayload int64) int64 {
	s, err := ring.Seal(name, nil)
	if err != nil {
		return 0
	}
	b, err := s.Marshal()
	if err != nil {
		return 0
	}
	around := int64(len(b)-base64.StdEncoding.EncodedLen(16)) + 10
	return max((maxPayload-around)/4*3-16, 0)
}

// warnNodesLackKey names each node that runs, or is to run, an app using
// one of sealed, secrets now sealed with key id, and whose heartbeat says
// it lacks that key: each start of those instances there fails until it has it,
// and the secrets were stored fine. A node is one that the app's spec
// selects or that has an instance of it; it is warned of once, with every
// such secret, as a rotate seals them all. What cannot be read warns of
// nothing: the secrets are stored all the same. It only reads: no bucket
// is created for it.
func (e *env) warnNodesLackKey(ctx context.Context, sealed []string, id string) {
	defer func(ro bool) { e.readOnly = ro }(e.readOnly)
	e.readOnly = true
	nodes, err := e.nodes(ctx)
	if err != nil {
		e.log.Debug("read heartbeats", "err", err)
		return
	}
	// Runners of an earlier release do not say: then nothing is to warn
	// of, and the specs need not be read.
	if !slices.ContainsFunc(nodes, func(n state.Node) bool { return keyMissing(n, id) != "" }) {
		return
	}
	apps, err := e.deployedApps(ctx)
	if err != nil {
		e.log.Debug("read deployed specs", "err", err)
		return
	}
	type use struct{ secrets, apps []string }
	uses := map[string]*use{}
	for _, d := range apps {
		// As users does: an unparsable spec uses what its text names whole.
		var used []string
		if d.app != nil {
			refs := secretRefs(d.app)
			used = slices.DeleteFunc(slices.Clone(sealed), func(s string) bool { return !slices.Contains(refs, s) })
		} else {
			used = mentioned(d.raw, sealed)
		}
		if len(used) == 0 {
			continue
		}
		for _, n := range nodes {
			runs := slices.ContainsFunc(n.Instances, func(in state.Instance) bool { return in.App == d.name })
			if !runs && (d.app == nil || d.app.ReplicasOn(n.ID, n.Labels) == 0) {
				continue
			}
			u := uses[n.ID]
			if u == nil {
				u = &use{}
				uses[n.ID] = u
			}
			u.secrets = append(u.secrets, used...)
			u.apps = append(u.apps, d.name)
		}
	}
	behind := e.awaitKeyReports(ctx, nodes, id, func(n state.Node) bool { return uses[n.ID] != nil })
	for _, n := range nodes {
		u := uses[n.ID]
		if u == nil {
			continue
		}
		slices.Sort(u.secrets)
		u.secrets = slices.Compact(u.secrets)
		if fresh, ok := behind[n.ID]; ok {
			if fresh.ID == "" {
				e.warnKeyUnreported(n, u.secrets, id, u.apps)
				continue
			}
			n = fresh
		}
		e.warnKeyMissing(n, u.secrets, id, u.apps)
	}
}

// keyChangeSlack is how long after its key file changed a heartbeat may
// still be one the runner made before: the file's time is the kernel's
// coarse clock, a tick behind, serverAhead is measured over a round trip,
// and a heartbeat is stored a moment after the runner reads its key file.
const keyChangeSlack = time.Second

// awaitKeyReports waits for a heartbeat, of each node that used says
// matters and that lacks key id as a heartbeat from before the key file
// last changed says: on a device where ctl and the runner share the key
// file, keygen --add and a rotate right after find the runner's last word
// from before the new key. A runner reads its key file again at every
// heartbeat, so one interval (and a second of slack, as a heartbeat's age
// is judged) brings its answer, within the --timeout. The nodes so found
// map to the heartbeat that came, or to none (ID "") when none came in
// time; a node whose heartbeat is newer than the file is not in the map.
// A key file that is not a regular file (a FIFO, <(pass show ...)) has no
// time of change to go by.
func (e *env) awaitKeyReports(ctx context.Context, nodes []state.Node, id string, used func(state.Node) bool) map[string]state.Node {
	st, err := os.Stat(e.cfg.Ctl.MasterKeyFile)
	if err != nil || !st.Mode().IsRegular() {
		return nil
	}
	// On the clock that stamps the heartbeats, and later by
	// keyChangeSlack: a heartbeat stored just after the change may have
	// been made, its key file read, just before it.
	changed := st.ModTime().Add(e.serverAhead + keyChangeSlack)
	behind := map[string]state.Node{}
	var keys []string
	var wait time.Duration
	for _, n := range nodes {
		if used(n) && keyMissing(n, id) != "" && n.Stored.Before(changed) {
			behind[n.ID] = state.Node{}
			keys = append(keys, n.ID)
			// A runner of a release that does not say its interval
			// adds no wait: its next heartbeat may be far off.
			if n.Interval > 0 {
				wait = max(wait, n.Interval+time.Second+keyChangeSlack)
			}
		}
	}
	if wait == 0 {
		return behind
	}
	ctx, cancel := context.WithTimeout(ctx, min(wait, e.timeout))
	defer cancel()
	kv, err := e.kv(ctx, names.NodesBucket)
	if err != nil {
		e.log.Debug("watch heartbeats", "err", err)
		return behind
	}
	// Not updates only: the latest heartbeat, which may have come since
	// they were read, is among the first entries.
	w, err := kv.WatchFiltered(ctx, keys)
	if err != nil {
		e.log.Debug("watch heartbeats", "err", err)
		return behind
	}
	defer w.Stop()
	waiting := len(keys)
	for waiting > 0 {
		var entry jetstream.KeyValueEntry
		select {
		case <-ctx.Done():
			return behind
		case entry = <-w.Updates():
		}
		if entry == nil || entry.Operation() != jetstream.KeyValuePut || entry.Created().Before(changed) {
			continue
		}
		var n state.Node
		if err := json.Unmarshal(entry.Value(), &n); err != nil {
			continue
		}
		if fresh, ok := behind[entry.Key()]; ok && fresh.ID == "" {
			n.ID, n.Stored = entry.Key(), entry.Created()
			behind[n.ID] = n
			waiting--
		}
	}
	return behind
}

// warnKeyUnreported warns of node n, whose last heartbeat, from before the
// key file changed, says it cannot open sealed, secrets sealed with key id,
// which apps use: whether it holds the key now is not known.
func (e *env) warnKeyUnreported(n state.Node, sealed []string, id string, apps []string) {
	what := "secret " + sealed[0]
	if len(sealed) > 1 {
		what = "secrets " + strings.Join(sealed, ", ")
	}
	e.warnf("node %s has not reported since key file %s changed, so whether it can open %s (key %s) is not known: its last heartbeat, from before, says %s; if that holds, instances of %s there fail to start until it holds that key (copy the key file to it, or set the secret with a key it holds)",
		cli.Shown(n.ID), e.cfg.Ctl.MasterKeyFile, what, cli.Shown(id), keyMissing(n, id), strings.Join(apps, ", "))
}

// warnSecretKeys names each node that app selects and that lacks the key
// one of its secrets is sealed with, as its heartbeat says: deploy checks
// that the secrets exist, and their instances there would fail to start
// all the same. sealedWith is the key id of each secret as that check
// read it: a read of its own could find another value than the one the
// deploy checked. A secret it lacks, or whose key id is "", warns of
// nothing.
func (e *env) warnSecretKeys(nodes []state.Node, app *spec.App, sealedWith map[string]string) {
	var told []state.Node
	for _, n := range nodes {
		if n.SecretKeys != nil && app.ReplicasOn(n.ID, n.Labels) > 0 {
			told = append(told, n)
		}
	}
	warned := map[string]bool{}
	for _, s := range app.Secrets {
		id := sealedWith[s.Name]
		if warned[s.Name] || id == "" {
			continue
		}
		warned[s.Name] = true
		for _, n := range told {
			e.warnKeyMissing(n, []string{s.Name}, id, []string{app.Name})
		}
	}
}

// warnKeyMissing warns when node n cannot open sealed, secrets sealed
// with key id, which apps use.
func (e *env) warnKeyMissing(n state.Node, sealed []string, id string, apps []string) {
	why := keyMissing(n, id)
	if why == "" {
		return
	}
	what := "secret " + sealed[0]
	if len(sealed) > 1 {
		what = "secrets " + strings.Join(sealed, ", ")
	}
	e.warnf("node %s cannot open %s (key %s): %s; instances of %s there fail to start until it holds that key (copy the key file to it, or set the secret with a key it holds)",
		cli.Shown(n.ID), what, cli.Shown(id), why, strings.Join(apps, ", "))
}

// keyMissing says why node n cannot open a secret sealed with key id; ""
// when it can, or when its heartbeat does not say (a runner of an earlier
// release sends no key ids).
func keyMissing(n state.Node, id string) string {
	k := n.SecretKeys
	switch {
	case k == nil || id == "" || slices.Contains(k.IDs, id):
		return ""
	case !k.File:
		return "it has no secret key file ([runner] master_key_file)"
	case len(k.IDs) == 0:
		return "its secret key file cannot be read (missing, malformed or readable by others)"
	}
	return "its key file holds only " + cli.Shown(strings.Join(k.IDs, ", "))
}

// dropEarlierSealed purges every stored value of the secret but the
// latest. Any app may read narun-secrets on a default device and write it
// through JetStream (docs/SECURITY.md), and a sealed value is not signed:
// an earlier one left in the bucket's history, planted again, still opens
// with the same key, and would give the app the value the operator
// replaced, perhaps because it leaked. retry is the command that purges
// them again, for the error: rotate purges every secret's history, so
// it need not ask for a value the operator may not have at hand. The
// stream's lookup and the purge each get the whole --timeout, as every
// NATS operation of ctl does.
func (e *env) dropEarlierSealed(ctx context.Context, name, retry string) error {
	var st jetstream.Stream
	err := e.within(ctx, func(ctx context.Context) (err error) {
		st, err = e.js.Stream(ctx, "KV_"+names.SecretsBucket)
		return err
	})
	if err == nil {
		err = e.within(ctx, func(ctx context.Context) error {
			return st.Purge(ctx, jetstream.WithPurgeSubject("$KV."+names.SecretsBucket+"."+name), jetstream.WithPurgeKeep(1))
		})
	}
	if err != nil {
		return fmt.Errorf("secret %s is stored, but its earlier sealed values were not purged from the history of %s (%s to retry): %w", name, names.SecretsBucket, retry, err)
	}
	return nil
}

// readInterruptible returns what read returns, unless ctx ends first:
// Ctrl-C only cancels ctx, and a read of a terminal waiting for Ctrl-D,
// or of a pipe whose writer hangs, would otherwise keep ctl running past
// it; so would the open of a FIFO, which waits until something opens it
// for writing. what (such as "secret value") and path, the file read or
// "" for stdin, name the read in that error. The read left behind ends
// with the process.
func readInterruptible[T any](ctx context.Context, what, path string, read func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	done := make(chan result, 1)
	go func() {
		v, err := read()
		done <- result{v, err}
	}()
	select {
	case res := <-done:
		return res.v, res.err
	case <-ctx.Done():
	}
	from := "stdin"
	if path != "" {
		from = path
		if st, err := os.Stat(path); err == nil && st.Mode()&fs.ModeNamedPipe != 0 {
			from += ", a FIFO that nothing wrote to and closed"
		}
	}
	var none T
	return none, fmt.Errorf("read %s from %s: %w", what, from, context.Cause(ctx))
}

func readLimited(name string, r io.Reader) ([]byte, error) {
	if r == nil {
		f, err := os.Open(name)
		if err != nil {
			return nil, fmt.Errorf("read secret value: %w", err)
		}
		defer f.Close()
		r = f
	}
	b, err := io.ReadAll(io.LimitReader(r, maxSecret+1))
	if err != nil {
		return nil, fmt.Errorf("read secret value from %s: %w", name, err)
	}
	if len(b) > maxSecret {
		return nil, fmt.Errorf("secret value from %s is larger than %d bytes", name, maxSecret)
	}
	return b, nil
}

type secretRow struct {
	Name  string `json:"name"`
	KeyID string `json:"key_id"`
	// Updated is RFC 3339 in UTC, as the other lists' times, for scripts
	// that compare it; "" when the stored value does not say.
	Updated string   `json:"updated"`
	UsedBy  []string `json:"used_by"`
	stamp   string
}

func secretList(ctx context.Context, c *ucli.Context, e *env) error {
	rows := []secretRow{}
	var all []string
	err := e.entries(ctx, names.SecretsBucket, "secret", func(k string, v []byte) {
		row := secretRow{Name: k}
		if s, err := secrets.Unmarshal(v); err == nil {
			row.KeyID, row.stamp = s.KeyID, stamp(s.Updated)
			if !s.Updated.IsZero() {
				row.Updated = s.Updated.UTC().Format(time.RFC3339)
			}
		}
		rows = append(rows, row)
		all = append(all, k)
	})
	if err != nil {
		return err
	}
	// The names first: a deployed spec this ctl cannot parse uses those
	// its text holds (users).
	used, _, err := e.users(ctx, all, secretRefs)
	if err != nil {
		return err
	}
	for i := range rows {
		rows[i].UsedBy = used[rows[i].Name]
		if rows[i].UsedBy == nil {
			rows[i].UsedBy = []string{}
		}
	}
	if c.Bool(flagJSON) {
		return e.printJSON(rows)
	}
	t := e.table("NAME", "KEY", "UPDATED", "USED BY")
	for _, r := range rows {
		t.row(r.Name, orDash(r.KeyID), orDash(r.stamp), orDash(strings.Join(r.UsedBy, ",")))
	}
	return t.flush()
}

func secretDelete(ctx context.Context, c *ucli.Context, e *env) error {
	kv, err := e.kv(ctx, names.SecretsBucket)
	if err != nil {
		return err
	}
	used, unparsed, err := e.users(ctx, c.Args().Slice(), secretRefs)
	if err != nil {
		return err
	}
	for _, name := range c.Args().Slice() {
		octx, cancel := e.op(ctx)
		_, err := kv.Get(octx, name)
		cancel()
		// A name no key can have is a secret that does not exist, as image
		// and files delete say of any name, not a failed read (exit 1).
		if isNotFound(err) || errors.Is(err, jetstream.ErrInvalidKey) {
			return notFound("secret %q does not exist%s", name, didYouMean(name, e.secretNames(ctx, kv, []string{name}), ""))
		}
		if err != nil {
			return fmt.Errorf("read secret %q: %w", name, err)
		}
		if apps := used[name]; len(apps) > 0 && !c.Bool(flagForce) {
			return refuseInUse("secret", name, apps, unparsed)
		}
	}
	for _, name := range c.Args().Slice() {
		// Purge, not delete: no old ciphertext stays in the history.
		if err := e.write(ctx, names.SecretsBucket, func(ctx context.Context) error { return kv.Purge(ctx, name) }); err != nil {
			return fmt.Errorf("delete secret %q: %w", name, err)
		}
		fmt.Fprintf(e.out(), "deleted secret %s\n", name)
	}
	return e.usedSince(ctx, c.Args().Slice(), used)
}

// usedSince fails when a deployed spec uses one of deleted, secrets that
// before (users) read no such spec for. A deploy checks its secrets, then
// stores its spec: one that ran between secret delete's check and its
// purge uses a secret now gone, and no stamp, as for files, could show it
// (a secret's value is the operator's to write, not a deploy's). Each of
// the two looks again after its own write (usesAll), so one of them sees
// the other and says so.
func (e *env) usedSince(ctx context.Context, deleted []string, before map[string][]string) error {
	later, _, err := e.users(ctx, deleted, secretRefs)
	if err != nil {
		return fmt.Errorf("check that no deploy started using the deleted secrets meanwhile: %w", err)
	}
	var problems []error
	for _, name := range deleted {
		var added []string
		for _, a := range later[name] {
			if !slices.Contains(before[name], a) {
				added = append(added, a)
			}
		}
		if len(added) > 0 {
			problems = append(problems, fmt.Errorf("secret %q is deleted, but %s, deployed while this ran, uses it: its instances cannot start; narun ctl secret set %s to put it back", name, strings.Join(added, ", "), name))
		}
	}
	if len(problems) > 0 {
		return &cli.ExitError{Code: ExitInUse, Err: errors.Join(problems...)}
	}
	return nil
}

func secretRotate(ctx context.Context, c *ucli.Context, e *env) error {
	ring, err := e.ring(ctx)
	if err != nil {
		return err
	}
	// Connected only now, as secret set does: without a key file the
	// command line is wrong (exit 2) whether NATS answers or not.
	if err := e.connect(); err != nil {
		return err
	}
	defer e.close()
	kv, err := e.kv(ctx, names.SecretsBucket)
	if err != nil {
		return err
	}
	done, current, err := secrets.Rotate(ctx, kv, ring, e.timeout)
	for _, n := range done {
		fmt.Fprintf(e.out(), "re-encrypted %s with key %s\n", n, ring.PrimaryID())
	}
	// JetStream that stopped answering would make every purge and read
	// below wait out its own timeout as well, one after the other.
	gone := store.Unanswered(err)
	if err != nil {
		err = e.sayDiskFull(ctx, names.SecretsBucket, fmt.Errorf("%d secret(s) re-encrypted, but not all: %w%s", len(done), err, lackingKeyHint(err, e.cfg.Ctl.MasterKeyFile, ring)))
	}
	// Until the old key leaves the key files, the copies it sealed would
	// open if planted again: the history of a secret already under the
	// primary key, set by a release that kept it, holds such copies too.
	// A purge that fails leaves every secret re-encrypted all the same,
	// which the error must not deny.
	purge := slices.Concat(done, current)
	for i, n := range purge {
		perr := e.dropEarlierSealed(ctx, n, "narun ctl secret rotate again")
		err = errors.Join(err, perr)
		if store.Unanswered(perr) {
			gone = true
			if rest := purge[i+1:]; len(rest) > 0 {
				err = errors.Join(err, fmt.Errorf("earlier sealed values of %s not purged: not tried once JetStream stopped answering (rotate again to purge them)", strings.Join(rest, ", ")))
			}
			break
		}
	}
	if gone {
		return fmt.Errorf("secret rotate: %w", majorityHint(e.nc, err))
	}
	// Those already under the key are named too: a node that lacks it
	// could not open them before the rotate either, and still cannot.
	e.warnNodesLackKey(ctx, purge, ring.PrimaryID())
	if err != nil {
		return fmt.Errorf("secret rotate: %w", err)
	}
	fmt.Fprintf(e.out(), "%d secret(s) re-encrypted; every secret now uses key %s\n", len(done), ring.PrimaryID())
	return nil
}

func secretKeygen(ctx context.Context, c *ucli.Context, e *env) error {
	named := e.cfg.Ctl.MasterKeyFile
	if named == "" {
		return usagef("name the key file with --key-file (or [ctl] master_key_file)")
	}
	// A key file that is a link (to a file that configuration management
	// or a shared mount keeps) is written where it leads, as an editor or
	// install(1) writes it: a file renamed over the link would hold the new
	// key while the target, which the nodes' copies come from, lacked it.
	path, err := linkTarget(named)
	if err != nil {
		return fmt.Errorf("key file %s: %w", named, err)
	}
	where := path
	if path != named {
		where = fmt.Sprintf("%s (the target of %s)", path, named)
	}
	key, err := secrets.NewKey()
	if err != nil {
		return err
	}
	content := []byte(key + "\n")
	ring, err := secrets.ParseRing(content)
	if err != nil {
		return err
	}
	if !c.Bool("add") {
		err := atomicfile.Create(path, content, 0o600)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("key file %s exists; pass --add to put a new key in front of the old ones", where)
		}
		if err != nil {
			return fmt.Errorf("write key file: %w", err)
		}
		fmt.Fprintf(e.out(), "key %s written to %s (keys: %s)\n", ring.PrimaryID(), where, ring.PrimaryID())
		return nil
	}
	// A FIFO's read would wait for a writer, and the rename would put a
	// file where the operator keeps something else.
	if st, err := os.Stat(path); err == nil && !st.Mode().IsRegular() {
		return fmt.Errorf("key file %s is %s, not a regular file: keygen --add rewrites a key file", where, elfarch.FileType(st.Mode()))
	}
	// The old keys are read under the directory's lock, so that of two
	// --add at once neither loses the other's key.
	var refused error
	err = atomicfile.Update(path, 0o600, func(old []byte) ([]byte, error) {
		// Its mode checked too, as every use of the file does.
		if _, refused = secrets.LoadRing(path); refused != nil {
			return nil, refused
		}
		content = append(content, old...)
		ring, refused = secrets.ParseRing(content)
		return content, refused
	})
	if refused != nil {
		return refused
	}
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("key file %s does not exist: run narun ctl secret keygen without --add to create it: %w", where, err)
	}
	if err != nil {
		return fmt.Errorf("write key file: %w", err)
	}
	fmt.Fprintf(e.out(), "key %s written to %s (keys: %s)\n", ring.PrimaryID(), where, strings.Join(ring.IDs(), ", "))
	return nil
}

// maxLinks is how many symbolic links linkTarget follows, as Linux's
// path lookup does (ELOOP beyond 40).
const maxLinks = 40

// linkTarget is the file that path names once every symbolic link on the
// way is followed; path itself when it is none. Unlike
// filepath.EvalSymlinks, the last target need not exist: a link made for
// a key file not generated yet leads keygen to create it there.
func linkTarget(path string) (string, error) {
	for range maxLinks {
		st, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) || err == nil && st.Mode()&fs.ModeSymlink == 0 {
			return path, nil
		}
		if err != nil {
			return "", err
		}
		to, err := os.Readlink(path)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(to) {
			// Read from the link's real directory, as the kernel reads it:
			// ".." of a directory that is itself a link is not the ".." its
			// name shows.
			dir, err := filepath.EvalSymlinks(filepath.Dir(path))
			if err != nil {
				return "", err
			}
			to = filepath.Join(dir, to)
		}
		path = to
	}
	return "", fmt.Errorf("more than %d symbolic links: %w", maxLinks, syscall.ELOOP)
}

// lackingKeyHint says, after a rotate's error, what to do of the secrets
// that did not open because the key file lacks their key: the error named
// them and the key id, but neither the file nor a way out. "" when none.
func lackingKeyHint(err error, file string, ring *secrets.Ring) string {
	var lacking []string
	var walk func(error)
	walk = func(err error) {
		if nk, ok := err.(*secrets.NoKeyError); ok {
			if !slices.Contains(lacking, nk.Name) {
				lacking = append(lacking, nk.Name)
			}
			return
		}
		switch u := err.(type) {
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				walk(e)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		}
	}
	walk(err)
	if len(lacking) == 0 {
		return ""
	}
	held := strings.Join(ring.IDs(), ", ")
	if len(lacking) == 1 {
		n := lacking[0]
		return fmt.Sprintf(" (the key file %s holds only %s: add the key %s is sealed with to it, or set %s again (narun ctl secret set %s), or delete it)", file, held, n, n, n)
	}
	return fmt.Sprintf(" (the key file %s holds only %s: add the keys %s are sealed with to it, or set each again (narun ctl secret set NAME), or delete them)", file, held, strings.Join(lacking, ", "))
}
