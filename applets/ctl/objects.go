package ctl

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/elfarch"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
)

func imageCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "image",
		Usage: "app binaries in " + names.BinariesBucket,
		Subcommands: []*ucli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "uploaded binaries and the apps that use them", Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, imageList)},
			{
				Name: "delete", Aliases: []string{"rm"}, Usage: "delete binaries no deployed spec uses", ArgsUsage: "OBJECT...",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: flagForce, Usage: "delete even if a deployed spec pins it"}},
				Action: action(stdio, true, imageDelete),
			},
		},
	}
}

func filesCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "files",
		Usage: "files for app instances in " + names.FilesBucket,
		Subcommands: []*ucli.Command{
			{Name: "put", Usage: "upload a file under NAME", ArgsUsage: "NAME FILE", Action: action(stdio, false, filesPut)},
			{Name: "list", Aliases: []string{"ls"}, Usage: "uploaded files and the apps that use them", Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, filesList)},
			{
				Name: "delete", Aliases: []string{"rm"}, Usage: "delete files no deployed spec uses", ArgsUsage: "NAME...",
				Flags:  []ucli.Flag{&ucli.BoolFlag{Name: flagForce, Usage: "delete even if a deployed spec uses it"}},
				Action: action(stdio, true, filesDelete),
			},
		},
	}
}

// object is a row of `image list` and `files list`.
type object struct {
	Name     string   `json:"name"`
	Size     uint64   `json:"size"`
	SHA256   string   `json:"sha256"`
	Arch     string   `json:"arch"`
	Modified string   `json:"modified"`
	UsedBy   []string `json:"used_by"`
	// stamp is Modified for people, in local time as secret list shows
	// its times.
	stamp string
}

// users maps an object or secret name to the deployed apps that reference
// it. A deployed spec this ctl cannot parse counts as referencing each of
// named that its text holds, as deploy's prune counts it
// (unparsedMentions): a newer ctl may have stored it and nodes may run it,
// so what it uses is unknown, and deleting what it does use breaks the
// app. unparsed holds the apps counted so, for a refusal to say why.
func (e *env) users(ctx context.Context, named []string, ref func(*spec.App) []string) (used map[string][]string, unparsed map[string]bool, err error) {
	apps, err := e.deployedApps(ctx)
	if err != nil {
		return nil, nil, err
	}
	m, unparsed := map[string][]string{}, map[string]bool{}
	for _, d := range apps {
		if d.app == nil {
			for _, o := range mentioned(d.raw, named) {
				m[o] = append(m[o], d.name)
				unparsed[d.name] = true
			}
			continue
		}
		for _, o := range ref(d.app) {
			// A spec may use one object twice (a secret as env and as
			// file): it is one user.
			if !slices.Contains(m[o], d.name) {
				m[o] = append(m[o], d.name)
			}
		}
	}
	return m, unparsed, nil
}

// refuseInUse is the refusal to delete name, a what that apps use; those
// in unparsed are named as apps that may use it, whose spec could not be
// parsed, so that the operator knows what --force would risk.
func refuseInUse(what, name string, apps []string, unparsed map[string]bool) error {
	var sure, maybe []string
	for _, a := range apps {
		if unparsed[a] {
			maybe = append(maybe, a)
		} else {
			sure = append(sure, a)
		}
	}
	var why []string
	if len(sure) > 0 {
		why = append(why, "is used by "+strings.Join(sure, ", "))
	}
	if len(maybe) > 0 {
		why = append(why, "may be used by "+strings.Join(maybe, ", ")+", whose spec names it but could not be parsed (a newer ctl may have stored it)")
	}
	return inUse("%s %q %s; deploy without it first or pass --force", what, name, strings.Join(why, " and "))
}

// keptPins maps an object name to the earlier revisions of deployed apps
// that reference it, as "APP revision N (version V)": what app rollback
// could restore and would refuse once the object is gone. Revisions of a
// deleted app are left out, as rollback does not bring one back.
func (e *env) keptPins(ctx context.Context, ref func(*spec.App) []string) (map[string][]string, error) {
	m := map[string][]string{}
	err := e.eachHistory(ctx, func(d deployed, revs []revision) {
		for _, r := range revs {
			if r.Current || r.app == nil {
				continue
			}
			pin := fmt.Sprintf("%s revision %d (version %s)", d.name, r.Revision, r.Version)
			for _, o := range ref(r.app) {
				if !slices.Contains(m[o], pin) {
					m[o] = append(m[o], pin)
				}
			}
		}
	})
	return m, err
}

// eachHistory calls each with every deployed app and the revisions of it
// that narun-apps keeps, oldest first. An app deleted since it was listed
// is left out: it has nothing to roll back.
func (e *env) eachHistory(ctx context.Context, each func(d deployed, revs []revision)) error {
	apps, err := e.deployedApps(ctx)
	if err != nil {
		return err
	}
	kv, err := e.kv(ctx, names.AppsBucket)
	if err != nil {
		return err
	}
	for _, d := range apps {
		revs, err := e.history(ctx, kv, d.name)
		if xe := (*cli.ExitError)(nil); errors.As(err, &xe) && xe.Code == ExitNotFound {
			continue
		}
		if err != nil {
			return err
		}
		each(d, revs)
	}
	return nil
}

func binaryRefs(a *spec.App) []string {
	var out []string
	for _, b := range a.Binaries {
		out = append(out, b.Object)
	}
	return out
}

func fileRefs(a *spec.App) []string {
	var out []string
	for _, f := range a.Files {
		out = append(out, f.Object)
	}
	return out
}

func secretRefs(a *spec.App) []string {
	var out []string
	for _, s := range a.Secrets {
		out = append(out, s.Name)
	}
	return out
}

func (e *env) listObjects(ctx context.Context, bucket string, ref func(*spec.App) []string) ([]object, error) {
	if _, err := e.objects(ctx, bucket); err != nil {
		return nil, err
	}
	infos, unreadable, err := e.objectInfos(ctx, bucket)
	if err != nil {
		return nil, err
	}
	for _, err := range unreadable {
		e.warnf("%v: %s", err, removeUnreadable(bucket, err))
	}
	var all []string
	for _, in := range infos {
		all = append(all, in.Name)
	}
	used, _, err := e.users(ctx, all, ref)
	if err != nil {
		return nil, err
	}
	out := []object{}
	for _, in := range infos {
		o := object{Name: in.Name, Size: in.Size, SHA256: store.DigestHex(in), Arch: in.Metadata["arch"], Modified: in.ModTime.UTC().Format("2006-01-02T15:04:05Z"), UsedBy: used[in.Name], stamp: stamp(in.ModTime)}
		if o.UsedBy == nil {
			o.UsedBy = []string{}
		}
		out = append(out, o)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (e *env) printObjects(c *ucli.Context, objs []object, withArch bool) error {
	if c.Bool(flagJSON) {
		return e.printJSON(objs)
	}
	head := []string{"NAME", "SIZE", "SHA256", "MODIFIED", "USED BY"}
	if withArch {
		head = []string{"NAME", "ARCH", "SIZE", "SHA256", "MODIFIED", "USED BY"}
	}
	t := e.table(head...)
	for _, o := range objs {
		digest := o.SHA256
		if len(digest) > 12 {
			digest = digest[:12]
		}
		cols := []string{o.Name, humanSize(o.Size), digest, o.stamp, orDash(strings.Join(o.UsedBy, ","))}
		if withArch {
			cols = append([]string{o.Name, orDash(o.Arch)}, cols[1:]...)
		}
		t.row(cols...)
	}
	return t.flush()
}

func imageList(ctx context.Context, c *ucli.Context, e *env) error {
	objs, err := e.listObjects(ctx, names.BinariesBucket, binaryRefs)
	if err != nil {
		return err
	}
	return e.printObjects(c, objs, true)
}

func filesList(ctx context.Context, c *ucli.Context, e *env) error {
	objs, err := e.listObjects(ctx, names.FilesBucket, fileRefs)
	if err != nil {
		return err
	}
	return e.printObjects(c, objs, false)
}

func imageDelete(ctx context.Context, c *ucli.Context, e *env) error {
	return e.deleteObjects(ctx, c, names.BinariesBucket, "image", binaryRefs)
}

func filesDelete(ctx context.Context, c *ucli.Context, e *env) error {
	return e.deleteObjects(ctx, c, names.FilesBucket, "file", fileRefs)
}

// deployInFlight bounds how long a deploy takes from stamping its pins to
// storing its spec: seconds, but for a slow link to NATS. Longer would
// keep an operator from deleting a file put by mistake for as long.
const deployInFlight = 2 * time.Minute

// deployWait is, for an object uploaded or stamped at stamped, how long
// ago that was and how much longer deleteObjects refuses it without
// --force (not positive: no longer), now being the server's time.
func (e *env) deployWait(now, stamped time.Time) (age, wait time.Duration) {
	age = max(now.Sub(stamped), 0)
	return age, min(e.cfg.Ctl.PruneGrace.D(), deployInFlight) - age
}

// deleteObjects deletes the named objects; all are checked before any is
// deleted, so a refused command changes nothing. An object only earlier
// kept revisions pin is deleted with a warning naming them, not refused:
// deleting old versions is what image delete is for, and every such
// delete needing --force would make --force routine, and with it the
// deletion of what a deployed spec runs.
//
// No stored spec shows what a deploy that is running will pin, so an
// object uploaded or stamped (stampPins) within deployInFlight (or
// prune_grace, if shorter) is refused as well, and each is deleted only
// if its metadata is still what the check read: a deploy that stamps it
// in between keeps it, and one that stamps it after fails, the object
// being gone. The metadata is read before the specs, so that a spec
// stored before the stamp was read is seen.
// byDeploy says whether a deploy wrote the object's metadata last: a
// build is uploaded by a deploy, while a file is put on its own, and a
// file only a files put wrote is no deploy's to store a spec for yet (a
// deploy that then stamps it finds it gone and fails).
func byDeploy(bucket string, m *jetstream.RawStreamMsg) bool {
	return bucket != names.FilesBucket || m.Header.Get(stampHeader) != ""
}

func (e *env) deleteObjects(ctx context.Context, c *ucli.Context, bucket, what string, ref func(*spec.App) []string) error {
	if _, err := e.objects(ctx, bucket); err != nil {
		return err
	}
	s, err := e.objectStream(ctx, bucket)
	if err != nil {
		return err
	}
	now, err := e.objectsNow(ctx, bucket)
	if err != nil {
		return err
	}
	type read struct {
		m    *jetstream.RawStreamMsg
		info *jetstream.ObjectInfo
	}
	// Each once: the second deletion of a name given twice would find the
	// first's marker in place of the metadata it read, and take it for a
	// deploy's stamp.
	var named []string
	for _, name := range c.Args().Slice() {
		if !slices.Contains(named, name) {
			named = append(named, name)
		}
	}
	var objs []read
	// The last metadata message of each named object whose metadata does
	// not read, by name.
	unreadable := map[string]*jetstream.RawStreamMsg{}
	for _, name := range named {
		m, info, err := e.objectMeta(ctx, bucket, name)
		var unread *unreadableMetaError
		switch {
		case errors.Is(err, errNoObject) || err == nil && info.Deleted:
			return notFound("%s %q does not exist", what, name)
		case errors.As(err, &unread) && c.Bool(flagForce):
			// No spec can name what nothing can fetch.
			unreadable[name] = m
			continue
		case errors.As(err, &unread):
			return fmt.Errorf("read %s %q: %w: %s", what, name, err, removeUnreadable(bucket, unread))
		case err != nil:
			return fmt.Errorf("read %s %q: %w", what, name, err)
		}
		objs = append(objs, read{m, info})
	}
	used, unparsed, err := e.users(ctx, named, ref)
	if err != nil {
		return err
	}
	for _, o := range objs {
		name := o.info.Name
		if apps := used[name]; len(apps) > 0 && !c.Bool(flagForce) {
			return refuseInUse(what, name, apps, unparsed)
		}
		if age, wait := e.deployWait(now, o.m.Time); wait > 0 && byDeploy(bucket, o.m) && !c.Bool(flagForce) {
			return inUse("%s %q was uploaded or pinned by a deploy %s ago: a deploy may be storing a spec that pins it; wait %s or pass --force", what, name, age.Round(time.Second), wait.Round(time.Second))
		}
	}
	kept, err := e.keptPins(ctx, ref)
	if err != nil {
		return err
	}
	for _, o := range objs {
		name := o.info.Name
		if revs := kept[name]; len(revs) > 0 {
			e.warnf("%s %s is pinned by earlier revisions %s keeps, which app rollback will refuse to restore once it is gone: %s", what, name, names.AppsBucket, strings.Join(revs, ", "))
		}
		deleted, err := e.deleteObjectAt(ctx, bucket, o.m, o.info)
		if err != nil {
			return fmt.Errorf("delete %s %q: %w", what, name, err)
		}
		if !deleted {
			return inUse("%s %q not deleted: a deploy uploaded or pinned it while this ran; run this again to see whether a spec uses it", what, name)
		}
		fmt.Fprintf(e.out(), "deleted %s %s\n", what, name)
	}
	for _, name := range named {
		m, ok := unreadable[name]
		if !ok {
			continue
		}
		// Its chunks, which only the metadata names, are left to the
		// reclaim below, as those of an upload cut short. Up to the
		// message read: metadata a deploy stored since stays.
		if err := e.within(ctx, func(ctx context.Context) error {
			return s.Purge(ctx, jetstream.WithPurgeSubject(m.Subject), jetstream.WithPurgeSequence(m.Sequence+1))
		}); err != nil {
			return fmt.Errorf("delete %s %q: purge its metadata: %w", what, name, err)
		}
		fmt.Fprintf(e.out(), "deleted %s %s, whose metadata did not read\n", what, name)
	}
	// Run to make room, it also finds what uploads cut short left, which
	// the deletions' count of objects may have hidden (reclaimChunks).
	e.reclaimChunks(ctx, bucket, true)
	return nil
}

func filesPut(ctx context.Context, c *ucli.Context, e *env) error {
	if c.NArg() != 2 {
		return usagef("want NAME FILE, got %d arguments", c.NArg())
	}
	name, path := c.Args().Get(0), c.Args().Get(1)
	if err := spec.ValidObjectName(name); err != nil {
		return usagef("file name %q: %v", name, err)
	}
	// The file is read twice, for its digest and to upload it: a device
	// such as /dev/zero never ends, a pipe cannot be read again, and
	// opening a named pipe waits for a writer, all past Ctrl-C, which
	// only cancels ctx.
	if st, err := os.Stat(path); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	} else if !st.Mode().IsRegular() {
		return fmt.Errorf("read %s: %s, not a regular file: files put uploads the content of a file", path, elfarch.FileType(st.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("read %s: %w", path, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	// Connected only once the command line and the file are known to be
	// good: a usage error is not a connection error.
	if err := e.connect(); err != nil {
		return err
	}
	defer e.close()
	if _, err := e.objects(ctx, names.FilesBucket); err != nil {
		return err
	}
	e.reclaimChunks(ctx, names.FilesBucket, false)
	info, err := e.putObject(ctx, names.FilesBucket, jetstream.ObjectMeta{Name: name, Metadata: map[string]string{"sha256": sum}}, f, sum, nil)
	if err != nil {
		return fmt.Errorf("upload file %s: %w", name, err)
	}
	fmt.Fprintf(e.out(), "file %s: %d bytes, sha256:%s\n", name, info.Size, sum[:12])
	// A deployed spec pins the content it was deployed or restarted
	// with: the new one reaches its instances with app restart alone.
	e.nameAppsToRestart(ctx, name, fileRefs, "instances keep the content they were deployed with")
	return nil
}

// nameAppsToRestart says which deployed apps use name (refs tells what a
// spec uses) and that app restart rolls its new content out to them, as
// their instances keep what they have: an operator who put a new value
// otherwise waits for a change that never comes. A failure to read the
// specs only leaves the hint out: name is stored all the same.
func (e *env) nameAppsToRestart(ctx context.Context, name string, refs func(*spec.App) []string, keep string) {
	used, _, err := e.users(ctx, []string{name}, refs)
	if err != nil {
		e.log.Debug("look for the apps that use "+name, "err", err)
		return
	}
	apps := used[name]
	if len(apps) == 0 {
		return
	}
	slices.Sort(apps)
	how := "narun ctl app restart " + apps[0]
	if len(apps) > 1 {
		how = "narun ctl app restart of each"
	}
	fmt.Fprintf(e.out(), "%s is used by %s, whose %s: %s rolls this one out\n", name, strings.Join(apps, ", "), keep, how)
}
