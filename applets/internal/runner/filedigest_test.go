package runner

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/testutil"
)

// fsImmutable is the inode flag FS_IMMUTABLE_FL, which x/sys does not name.
const fsImmutable = 0x10

// setImmutable sets or clears dir's immutable flag, which stops root too
// from adding or removing its entries: a real fault for a write below it.
func setImmutable(t *testing.T, dir string, on bool) {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	flags, err := unix.IoctlGetUint32(fd, unix.FS_IOC_GETFLAGS)
	if err != nil {
		t.Skipf("the file system of %s keeps no inode flags: %v", dir, err)
	}
	if on {
		flags |= fsImmutable
	} else {
		flags &^= fsImmutable
	}
	if err := unix.IoctlSetPointerInt(fd, unix.FS_IOC_SETFLAGS, int(flags)); err != nil {
		if on {
			t.Skipf("cannot make %s immutable (needs CAP_LINUX_IMMUTABLE): %v", dir, err)
		}
		t.Fatal(err)
	}
}

// A fetch of a [[files]] object that fails between replacing the cached
// copy and recording its digest (a power cut, a full disk) must not leave
// the new copy beside the old digest: read while NATS is away, that pair
// looks damaged, the copy is removed and the instance cannot start until
// NATS answers.
func TestFailedFileFetchLeavesACopyThatMatchesItsDigest(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	tr := startRunner(t, c, nil)
	testutil.Eventually(t, 10*time.Second, "runner connected", func() bool { return tr.res.Load() != nil })
	c.putFile(t, "conf", "one")
	f := spec.File{Object: "conf", Path: "x"}
	if err := tr.placeFile(context.Background(), tr.res.Load(), f, "", t.TempDir()); err != nil {
		t.Fatal(err)
	}
	c.putFile(t, "conf", "two")

	digests := tr.fileDigestsDir()
	setImmutable(t, digests, true)
	err := tr.placeFile(context.Background(), tr.res.Load(), f, "", t.TempDir())
	setImmutable(t, digests, false)
	if err == nil {
		t.Fatal("fetch with the digests directory immutable succeeded")
	}

	dir := t.TempDir()
	if err := tr.placeFile(context.Background(), nil, f, "", dir); err != nil {
		t.Fatalf("placed without NATS after the failed fetch: %v", err)
	}
	if b, err := os.ReadFile(filepath.Join(dir, "x")); err != nil || (string(b) != "one" && string(b) != "two") {
		t.Errorf("placed %q, %v; want one of the object's contents", b, err)
	}
}
