package ctl

import (
	"runtime"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/names"
)

// An object named twice on one command line (a script's list, a glob
// that overlaps) is deleted once: the second deletion found the first's
// marker and took it for a deploy's stamp, so a delete that did what it
// was asked exited 5 and blamed a deploy that never ran.
func TestDeleteNamedTwice(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	h.pruneGrace("0s")
	h.ok("", "files", "put", "conf", h.file("conf.toml", "answer = 42\n"))
	r := h.ok("", "files", "delete", "conf", "conf")
	if n := strings.Count(r.out, "deleted file conf"); n != 1 {
		t.Errorf("files delete conf conf said it deleted conf %d times:\n%s", n, r.out)
	}
	if h.objectCount(names.FilesBucket) != 0 {
		t.Error("file not deleted")
	}

	h.ok("", "deploy", h.file("hello.toml", helloSpec), "--binary", elfBinary(t))
	name := h.storedApp("hello").Binaries[runtime.GOARCH].Object
	h.ok("", "app", "delete", "hello")
	h.ok("", "image", "delete", name, name)
	if h.objectCount(names.BinariesBucket) != 0 {
		t.Error("image not deleted")
	}
}

// A name no key can have (a wildcard, an empty one) names a secret that
// does not exist: exit 3, as image and files delete say of such names,
// not the error of a failed read.
func TestSecretDeleteImpossibleName(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	for _, name := range []string{"a*", "", "db.>", "a b"} {
		r := h.fails(ExitNotFound, "", "secret", "delete", name)
		if !strings.Contains(r.err, "does not exist") {
			t.Errorf("secret delete %q: %s", name, r.err)
		}
	}
}
