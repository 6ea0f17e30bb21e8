package runner

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/applets/internal/testutil"
)

func TestWriteVerified(t *testing.T) {
	t.Parallel()
	content := "#!/bin/true\n"
	sum := sha256.Sum256([]byte(content))
	good := hex.EncodeToString(sum[:])
	tests := []struct {
		name      string
		want      string
		ok        bool
		permanent bool
	}{
		{"digest matches", good, true, false},
		{"digest differs", strings.Repeat("0", 64), false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			dst := filepath.Join(dir, tt.want)
			err := writeVerified(dir, dst, strings.NewReader(content), tt.want, 0o555)
			if (err == nil) != tt.ok || errors.Is(err, supervisor.ErrPermanent) != tt.permanent {
				t.Fatalf("writeVerified: %v", err)
			}
			entries, _ := os.ReadDir(dir)
			if !tt.ok {
				if len(entries) != 0 {
					t.Errorf("a mismatch left %v behind", entries)
				}
				return
			}
			st, err := os.Stat(dst)
			if err != nil || st.Mode().Perm() != 0o555 || len(entries) != 1 {
				t.Errorf("verified file: %v %v, dir %v", st, err, entries)
			}
		})
	}
}

func TestCacheGC(t *testing.T) {
	t.Parallel()
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	keep, drop := strings.Repeat("a", 64), strings.Repeat("b", 64)
	for _, name := range []string{keep, drop, ".tmp-123", "README"} {
		if err := os.WriteFile(filepath.Join(c.dir, name), nil, 0o555); err != nil {
			t.Fatal(err)
		}
	}
	removed := c.gc(map[string]bool{keep: true}, time.Now())
	if len(removed) != 1 || removed[0] != drop {
		t.Errorf("removed %v, want only %s", removed, drop)
	}
	for _, name := range []string{keep, ".tmp-123", "README"} {
		if _, err := os.Stat(filepath.Join(c.dir, name)); err != nil {
			t.Errorf("%s: %v", name, err)
		}
	}
}

// A binary gc removed leaves nothing of it in the cache's memory: a node
// runs new builds for months.
func TestCacheForgetsRemovedBinaries(t *testing.T) {
	t.Parallel()
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		content := fmt.Sprintf("build %d", i)
		digest := sha256Hex(content)
		if err := os.WriteFile(c.path(digest), []byte(content), 0o555); err != nil {
			t.Fatal(err)
		}
		if _, err := c.binary(context.Background(), nil, spec.Binary{Object: "app/1/linux", SHA256: digest}); err != nil {
			t.Fatal(err)
		}
	}
	if removed := c.gc(nil, time.Now()); len(removed) != 3 {
		t.Fatalf("removed %v, want the 3 binaries no app keeps", removed)
	}
	c.flights.mu.Lock()
	locks := len(c.flights.m)
	c.flights.mu.Unlock()
	c.mu.Lock()
	defer c.mu.Unlock()
	if locks != 0 || len(c.handedOut) != 0 || len(c.verified) != 0 {
		t.Errorf("after gc removed every binary: %d locks, %d hand-outs, %d verifications kept", locks, len(c.handedOut), len(c.verified))
	}
}

// A binary handed out to an app that started after gc listed what the
// apps keep is not removed under it: the app runs it next.
func TestCacheGCSparesBinaryHandedOutMeanwhile(t *testing.T) {
	t.Parallel()
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	digest := sha256Hex("")
	if err := os.WriteFile(c.path(digest), nil, 0o555); err != nil {
		t.Fatal(err)
	}
	listed := time.Now()
	// From the cache: no object store needed.
	p, err := c.binary(context.Background(), nil, spec.Binary{Object: "app/1/linux", SHA256: digest})
	if err != nil {
		t.Fatal(err)
	}
	if removed := c.gc(nil, listed); len(removed) != 0 {
		t.Fatalf("removed %v, handed out after the listing", removed)
	}
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("binary handed out: %v", err)
	}
	// The next gc, which lists after the hand-out, judges it by keep.
	if removed := c.gc(nil, time.Now()); len(removed) != 1 {
		t.Fatalf("removed %v, want the binary no app keeps", removed)
	}
}

// A cached binary changed on disk since it was verified (a bad SD card, a
// power cut while the file system was repairing) is neither handed out nor
// kept: offline it is an error that names the file and waits for NATS, and
// the next attempt that reaches the object store replaces it.
func TestCacheRefusesDamagedBinary(t *testing.T) {
	t.Parallel()
	content := "#!/bin/true\n"
	digest := sha256Hex(content)
	b := spec.Binary{Object: "app/1/linux", SHA256: digest}
	for _, damage := range []struct {
		name    string
		content string
	}{
		{"truncated", content[:3]},
		{"empty", ""},
		{"bit flipped", "#!/bin/trve\n"},
	} {
		t.Run(damage.name, func(t *testing.T) {
			c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			// Verified once, so that the check after the damage is the
			// one that could trust the earlier hash.
			if err := os.WriteFile(c.path(digest), []byte(content), 0o555); err != nil {
				t.Fatal(err)
			}
			if _, err := c.binary(context.Background(), nil, b); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(c.path(digest), []byte(damage.content), 0o555); err != nil {
				t.Fatal(err)
			}
			p, err := c.binary(context.Background(), nil, b)
			if err == nil {
				t.Fatalf("damaged binary handed out as %s", p)
			}
			if !errors.Is(err, errOffline) || errors.Is(err, supervisor.ErrPermanent) || !strings.Contains(err.Error(), c.path(digest)) || !strings.Contains(err.Error(), "damaged") {
				t.Errorf("error %q: want a retryable error naming the damaged file", err)
			}
			if _, err := os.Lstat(c.path(digest)); !os.IsNotExist(err) {
				t.Errorf("damaged binary kept in the cache: %v", err)
			}
		})
	}
}

// A cached binary whose digest holds but whose mode changed (a chmod -x
// by hand, a backup restored without modes) is handed out executable
// again: its exec would fail with EACCES at every start, counted as a
// crash, while nothing would fetch it again.
func TestCacheRestoresBinaryMode(t *testing.T) {
	t.Parallel()
	content := "#!/bin/true\n"
	digest := sha256Hex(content)
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(c.path(digest), []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := c.binary(context.Background(), nil, spec.Binary{Object: "app/1/linux", SHA256: digest})
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o555 {
		t.Fatalf("cached binary handed out with mode %v (%v), want 0555", fi.Mode().Perm(), err)
	}
}

// placeBeneath writes below the instance dir only: not by a path that
// leaves it, nor through a link in it, wherever the link points.
func TestPlaceBeneath(t *testing.T) {
	t.Parallel()
	outside := t.TempDir()
	tests := []struct {
		rel, want string // want is "" for a file placed at rel
	}{
		{"conf/app.toml", ""},
		{"a", ""},
		{"./b//c/./d", ""},
		{"../etc/passwd", "leaves the instance directory"},
		{"a/../../b", "leaves the instance directory"},
		{"/etc/passwd", "leaves the instance directory"},
		{"link/x", `"link" is a symbolic link`},
		{"deep/link/x", `"deep/link" is a symbolic link`},
		{"a/x", `"a" is not a directory`},
	}
	dir := t.TempDir()
	if err := os.Symlink(outside, filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(filepath.Join(dir, "deep"), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(outside, filepath.Join(dir, "deep", "link")); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		err := placeBeneath(dir, tt.rel, strings.NewReader(tt.rel), 0o444)
		switch {
		case tt.want == "" && err != nil:
			t.Errorf("placeBeneath(%q): %v", tt.rel, err)
		case tt.want == "":
			if b, err := os.ReadFile(filepath.Join(dir, tt.rel)); err != nil || string(b) != tt.rel {
				t.Errorf("placeBeneath(%q) placed %q (%v)", tt.rel, b, err)
			}
		case err == nil || !strings.Contains(err.Error(), tt.want) || !errors.Is(err, supervisor.ErrPermanent):
			t.Errorf("placeBeneath(%q) = %v, want a permanent error saying %q", tt.rel, err, tt.want)
		}
	}
	if es, _ := os.ReadDir(outside); len(es) > 0 {
		t.Errorf("written through a link: %v", es)
	}
}

func TestHostNodeID(t *testing.T) {
	t.Parallel()
	tests := []struct{ host, want string }{
		{"edge-01", "edge-01"},
		{"edge-01.example.com", "edge-01"},
		{"my host", "my-host"},
		{"", "node"},
		{"10.0.0.5", "10-0-0-5"},
		{"fe80::1%eth0", "fe80--1-eth0"},
		{strings.Repeat("a", 100), strings.Repeat("a", 64)},
	}
	for _, tt := range tests {
		if got := hostNodeID(tt.host); got != tt.want {
			t.Errorf("hostNodeID(%q) = %q, want %q", tt.host, got, tt.want)
		}
	}
}

func TestAppNATSURL(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	for _, tt := range []struct {
		name    string
		opts    Options
		want    string
		dropped bool
	}{
		{"configured for apps wins over narun up's embedded server", Options{Config: config.Runner{AppNATSURL: "nats://app:pw@127.0.0.1:4222"}, AppNATSURL: "nats://127.0.0.1:4222"}, "nats://app:pw@127.0.0.1:4222", false},
		{"narun up's embedded server", Options{Config: config.Runner{Client: config.Client{NATSURL: "nats://runner:4222"}}, AppNATSURL: "nats://127.0.0.1:4222"}, "nats://127.0.0.1:4222", false},
		{"the runner's own URL", Options{Config: config.Runner{Client: config.Client{NATSURL: "nats://runner:4222"}}}, "nats://runner:4222", false},
		{"the runner's own URLs without their logins", Options{Config: config.Runner{Client: config.Client{NATSURL: "nats://edge:pw@a:4222, tls://t0ken@b,edge:pw@c"}}}, "nats://a:4222, tls://b,c", true},
		{"where the runner is connected", Options{}, c.nc.ConnectedUrl(), false},
	} {
		t.Run(tt.name, func(t *testing.T) {
			tt.opts.Conn = c.nc
			if got, dropped := appNATSURL(tt.opts); got != tt.want || dropped != tt.dropped {
				t.Errorf("apps get %q (login dropped %v), want %q (%v)", got, dropped, tt.want, tt.dropped)
			}
		})
	}
}

func TestDataDirLocked(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	first := startRunner(t, c, nil)
	testutil.Eventually(t, 10*time.Second, "first runner connected", func() bool { return first.res.Load() != nil })
	second, err := New(Options{Config: first.opts.Config, DataDir: first.dir, Conn: c.nc})
	if err != nil {
		t.Fatal(err)
	}
	// Run returns at once with the error; without the lock it would run
	// until the deadline and return nil.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err = second.Run(ctx)
	if err == nil || !strings.Contains(err.Error(), "in use by another runner") {
		t.Fatalf("second runner on one data dir: %v", err)
	}
}

func TestLogLimit(t *testing.T) {
	t.Parallel()
	// The end of a window is also told from a timer, which may publish
	// while the test reads: published is appended to under ll's lock.
	var published []state.LogLine
	ll := newLogLimit(func(l state.LogLine, _ []byte) { published = append(published, l) }, afterFunc, slog.New(slog.DiscardHandler))
	t0 := time.Now()
	line := func(at time.Duration, text string) {
		ll.line(state.LogLine{Time: t0.Add(at), Instance: "0-abc", Stream: state.Stdout, Line: text})
	}
	snapshot := func() []state.LogLine {
		ll.mu.Lock()
		defer ll.mu.Unlock()
		return slices.Clone(published)
	}
	for i := range logBurst + 5 {
		line(time.Millisecond, fmt.Sprint("line ", i))
	}
	got := snapshot()
	if len(got) != logBurst+1 {
		t.Fatalf("published %d lines of %d, want the first %d and a notice", len(got), logBurst+5, logBurst)
	}
	until := t0.Add(time.Millisecond + logWindow).UTC().Format(time.RFC3339)
	if n := got[logBurst]; n.Stream != state.Narun || !strings.Contains(n.Line, "dropping this instance's output until "+until) {
		t.Errorf("notice: %+v, want it to say until %s", n, until)
	}
	// Whether the window's timer or this line tells the count first, it
	// comes before the line.
	line(logWindow+time.Millisecond, "after the window")
	got = snapshot()
	if n := len(got); n != logBurst+3 || !strings.Contains(got[n-2].Line, "5 lines of this instance were dropped") || got[n-1].Line != "after the window" {
		t.Errorf("after the window: %+v", got[logBurst+1:])
	}

	// Long lines reach the byte bound first: 4 MiB as published, where
	// each line takes its JSON too.
	before := len(got)
	big := strings.Repeat("x", 1<<20)
	for range 5 {
		line(3*logWindow, big)
	}
	got = snapshot()[before:]
	if len(got) != 4 || got[2].Line != big || !strings.Contains(got[3].Line, "dropping") {
		t.Errorf("5 MiB in one window: %d lines published, last %.40q", len(got), got[len(got)-1].Line)
	}
}

// The byte bound counts what NARUN_LOGS stores, not what the app printed:
// JSON stores a control character in six bytes, and a line of them,
// counted as printed, filled the stream six times faster than the bound.
func TestLogLimitCountsPublishedBytes(t *testing.T) {
	t.Parallel()
	var published int
	ll := newLogLimit(func(_ state.LogLine, b []byte) { published += len(b) }, afterFunc, slog.New(slog.DiscardHandler))
	t0 := time.Now()
	for range 1000 {
		ll.line(state.LogLine{Time: t0, Instance: "0-abc", Stream: state.Stdout, Line: strings.Repeat("\x01", 8<<10)})
	}
	ll.mu.Lock()
	defer ll.mu.Unlock()
	// The notice that lines are dropped comes on top of the bound.
	if published > logBytes+1024 {
		t.Errorf("published %d bytes in one window, bound %d", published, logBytes)
	}
}

// A line is published as JSON that keeps <, > and & as they are: json.Marshal
// stores each in six bytes, and Go programs print "<nil>" often.
func TestEncodeLogKeepsHTML(t *testing.T) {
	l := state.LogLine{Time: time.Now(), App: "a", Node: "n", Instance: "0-abc", Stream: state.Stdout, Line: "err=<nil> a && b -> c \x1b"}
	b := encodeLog(l)
	if !bytes.Contains(b, []byte(`"err=<nil> a && b -> c \u001b"`)) {
		t.Errorf("encoded as %s", b)
	}
	var back state.LogLine
	if err := json.Unmarshal(b, &back); err != nil || back.Line != l.Line || !back.Time.Equal(l.Time) {
		t.Errorf("decoded %+v (%v), want %+v", back, err, l)
	}
}

// A binary hashed a moment ago whose file has not changed since is handed
// out without hashing it again; any write to it is seen at once.
func TestCacheTrustsRecentHashOfUnchangedFile(t *testing.T) {
	t.Parallel()
	c, err := newCache(t.TempDir(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	content := "#!/bin/true\n"
	digest := sha256Hex(content)
	b := spec.Binary{Object: "app/1/linux", SHA256: digest}
	// Contents that do not match, under a hash recorded for the file as it
	// is: handed out only if the recorded hash is trusted.
	if err := os.WriteFile(c.path(digest), []byte("#!/bin/trve\n"), 0o555); err != nil {
		t.Fatal(err)
	}
	fi, err := os.Lstat(c.path(digest))
	if err != nil {
		t.Fatal(err)
	}
	stamp, ok := stampOf(fi)
	if !ok {
		t.Fatal("no stamp for a file on Linux")
	}
	// Hashed after the file had settled, as a start a while after the
	// fetch is.
	c.verified[digest] = verification{stamp: stamp, at: time.Now().Add(2 * timestampGrain)}
	if _, err := c.binary(context.Background(), nil, b); err != nil {
		t.Fatalf("a file unchanged since it was hashed was hashed again: %v", err)
	}
	// Of another length: file times may not move within a tick, which
	// settled is for.
	if err := os.WriteFile(c.path(digest), []byte("#!/bin/trve \n"), 0o555); err != nil {
		t.Fatal(err)
	}
	if p, err := c.binary(context.Background(), nil, b); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Fatalf("a file written after it was hashed handed out as %s (%v)", p, err)
	}
}

// A hash taken within a tick of file times of the file's last change is
// not trusted: a write right after it could leave the stamp unchanged.
func TestVerificationSettled(t *testing.T) {
	t.Parallel()
	now := time.Now()
	at := func(d time.Duration) syscall.Timespec { return syscall.NsecToTimespec(now.Add(d).UnixNano()) }
	if (verification{stamp: fileStamp{ctime: at(-2 * timestampGrain)}, at: now}).settled() != true {
		t.Error("a file changed long before its hash is not trusted")
	}
	if (verification{stamp: fileStamp{ctime: at(-time.Millisecond)}, at: now}).settled() != false {
		t.Error("a file changed just before its hash is trusted")
	}
}

// A heartbeat of many instances that does not fit in a NATS message goes
// without their reasons when that fits, and otherwise is an error that
// says why: it used to fail at every write, logged at debug level only,
// and its node dropped out of narun-nodes. 1001 failing instances made a
// heartbeat of 460 KB.
func TestEncodeHeartbeatTooLarge(t *testing.T) {
	t.Parallel()
	n := state.Node{ID: "edge-1"}
	for i := range 1000 {
		n.Instances = append(n.Instances, state.Instance{App: fmt.Sprintf("app%d", i), Node: "edge-1", ID: fmt.Sprintf("0-%06x", i),
			State: state.Running, Reason: "not healthy 30s after start: " + strings.Repeat("x", 400)})
	}
	full, trimmed, err := encodeHeartbeat(n, 0)
	if err != nil || trimmed {
		t.Fatalf("without a limit: trimmed %v, err %v", trimmed, err)
	}
	b, trimmed, err := encodeHeartbeat(n, len(full)/2)
	if err != nil || !trimmed || len(b) > len(full)/2 {
		t.Fatalf("within half: %d bytes of at most %d, trimmed %v, err %v", len(b), len(full)/2, trimmed, err)
	}
	var got state.Node
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Instances) != 1000 || got.Instances[999].ID != n.Instances[999].ID || got.Instances[0].Reason != "" {
		t.Errorf("trimmed heartbeat: %d instances, last %q, first reason %q; want 1000, the last, none", len(got.Instances), got.Instances[999].ID, got.Instances[0].Reason)
	}
	if n.Instances[0].Reason == "" {
		t.Error("trimming changed the caller's instances")
	}
	_, _, err = encodeHeartbeat(n, len(b)-1)
	if err == nil || !strings.Contains(err.Error(), "1000 instances") || !strings.Contains(err.Error(), "above the") {
		t.Errorf("too large even trimmed: err %v, want one naming 1000 instances and the limit", err)
	}
}
