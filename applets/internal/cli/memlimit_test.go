package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"

	"github.com/narun/narun/sandbox"
)

// cgroupFiles writes files under a temp dir standing for "/".
func cgroupFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, content := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// Mount tables of the three layouts, as /proc/self/mountinfo gives them.
const (
	mountsV1 = `25 1 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755
31 25 0:27 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime - cgroup cgroup rw,memory
32 25 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
`
	mountsHybrid = mountsV1 + `26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
`
	mountsV2 = `26 1 0:23 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
`
	// A container's cgroup namespace mounts its own cgroup at the
	// mount point, and /proc/self/cgroup names it "/".
	mountsV2Container = `26 1 0:23 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
`
	// Without a cgroup namespace, a container's mount shows only its
	// cgroup (the root field), while /proc/self/cgroup names the whole
	// path.
	mountsV1Bind = `31 25 0:27 /docker/abc /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory
`
)

// The limit of the cgroup a service runs in is read in each layout
// a device may have, as the lowest of its own and its parents'; "max",
// v1's unlimited value and files that are not there mean none.
func TestCgroupMemoryLimit(t *testing.T) {
	const v1Unlimited = "9223372036854771712\n"
	for _, tc := range []struct {
		name  string
		files map[string]string
		want  int64
	}{
		{"v1", map[string]string{
			"proc/self/cgroup":    "5:pids:/system.slice/narun.service\n4:memory:/system.slice/narun.service\n0::/system.slice/narun.service\n",
			"proc/self/mountinfo": mountsHybrid,
			"sys/fs/cgroup/memory/system.slice/narun.service/memory.limit_in_bytes": "268435456\n",
			"sys/fs/cgroup/memory/system.slice/narun.service/memory.stat":           "cache 0\nrss 0\nhierarchical_memory_limit 268435456\n",
		}, 256 << 20},
		{"v1 parent lower", map[string]string{
			"proc/self/cgroup":    "4:memory:/system.slice/narun.service\n",
			"proc/self/mountinfo": mountsV1,
			"sys/fs/cgroup/memory/system.slice/narun.service/memory.limit_in_bytes": v1Unlimited,
			"sys/fs/cgroup/memory/system.slice/narun.service/memory.stat":           "hierarchical_memory_limit 536870912\n",
		}, 512 << 20},
		{"v1 unlimited", map[string]string{
			"proc/self/cgroup":    "4:memory:/user.slice\n",
			"proc/self/mountinfo": mountsV1,
			"sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes": v1Unlimited,
			"sys/fs/cgroup/memory/user.slice/memory.stat":           "hierarchical_memory_limit " + v1Unlimited,
		}, 0},
		{"v1 container mount", map[string]string{
			"proc/self/cgroup":                           "4:memory:/docker/abc\n",
			"proc/self/mountinfo":                        mountsV1Bind,
			"sys/fs/cgroup/memory/memory.limit_in_bytes": "134217728\n",
		}, 128 << 20},
		{"v2", map[string]string{
			"proc/self/cgroup":    "0::/system.slice/narun.service\n",
			"proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/system.slice/narun.service/memory.max": "268435456\n",
			"sys/fs/cgroup/system.slice/memory.max":               "max\n",
		}, 256 << 20},
		{"v2 max, parent lower", map[string]string{
			"proc/self/cgroup":    "0::/system.slice/narun.service\n",
			"proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/system.slice/narun.service/memory.max": "max\n",
			"sys/fs/cgroup/system.slice/memory.max":               "536870912\n",
		}, 512 << 20},
		{"v2 high", map[string]string{
			"proc/self/cgroup":    "0::/system.slice/narun.service\n",
			"proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/system.slice/narun.service/memory.max":  "536870912\n",
			"sys/fs/cgroup/system.slice/narun.service/memory.high": "268435456\n",
		}, 256 << 20},
		{"v2 max", map[string]string{
			"proc/self/cgroup":    "0::/user.slice/session-1.scope\n",
			"proc/self/mountinfo": mountsV2,
			"sys/fs/cgroup/user.slice/session-1.scope/memory.max":  "max\n",
			"sys/fs/cgroup/user.slice/session-1.scope/memory.high": "max\n",
			"sys/fs/cgroup/user.slice/memory.max":                  "max\n",
		}, 0},
		{"v2 root cgroup", map[string]string{
			"proc/self/cgroup":    "0::/\n",
			"proc/self/mountinfo": mountsV2,
		}, 0},
		{"v2 container", map[string]string{
			"proc/self/cgroup":         "0::/\n",
			"proc/self/mountinfo":      mountsV2Container,
			"sys/fs/cgroup/memory.max": "268435456\n",
		}, 256 << 20},
		{"hybrid v2 without memory", map[string]string{
			"proc/self/cgroup":    "0::/system.slice/narun.service\n",
			"proc/self/mountinfo": `26 25 0:23 / /sys/fs/cgroup/unified rw - cgroup2 cgroup2 rw` + "\n",
		}, 0},
		{"no cgroups", map[string]string{"proc/self/mountinfo": mountsV2}, 0},
		{"no memory controller", map[string]string{
			"proc/self/cgroup":    "5:pids:/a\n",
			"proc/self/mountinfo": mountsV1,
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := cgroupMemoryLimit(cgroupFiles(t, tc.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("limit %d, want %d", got, tc.want)
			}
		})
	}
}

// A limit file that says something else is an error that names it, not
// a limit of 0 taken for none without a word.
func TestCgroupMemoryLimitUnreadable(t *testing.T) {
	root := cgroupFiles(t, map[string]string{
		"proc/self/cgroup":           "0::/a\n",
		"proc/self/mountinfo":        mountsV2,
		"sys/fs/cgroup/a/memory.max": "lots\n",
	})
	_, err := cgroupMemoryLimit(root)
	if err == nil || !strings.Contains(err.Error(), filepath.Join(root, "sys/fs/cgroup/a/memory.max")) {
		t.Fatalf("err = %v, want one naming the file", err)
	}
}

// memLimitChildEnv makes the test binary act as a service reading its
// memory limit, for TestServiceMemoryLimitInCgroup.
const memLimitChildEnv = "NARUN_TEST_MEMLIMIT_CHILD"

// A service started in a memory-limited cgroup gives Go's garbage
// collector a soft limit of three quarters of it, unless GOMEMLIMIT is
// set: Go reads no cgroup limit itself, and `narun up` in a 256 MiB
// cgroup was killed by the kernel under 64 concurrent 1 MiB uploads
// while much of its heap was garbage. The child runs in a real cgroup
// made as an app's (v1 or v2, whichever the machine has), so the lookup
// of its own cgroup through /proc is what is tested.
func TestServiceMemoryLimitInCgroup(t *testing.T) {
	if os.Getenv(memLimitChildEnv) != "" {
		setMemoryLimit(slog.New(slog.NewTextHandler(io.Discard, nil)))
		fmt.Printf("gomemlimit %d\n", debug.SetMemoryLimit(-1))
		return
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a cgroup")
	}
	const limit = 256 << 20
	cg, err := sandbox.NewCgroup(fmt.Sprintf("%s/clitest-%d/memlimit", sandbox.CgroupParent, os.Getpid()), "", sandbox.Resources{MemoryMax: limit})
	if errors.Is(err, sandbox.ErrNoCgroups) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	if err := cg.Create(); err != nil {
		t.Skip("no cgroup can be made here:", err)
	}
	t.Cleanup(func() {
		if err := sandbox.RemoveScope(fmt.Sprintf("clitest-%d", os.Getpid())); err != nil {
			t.Error(err)
		}
	})
	for _, tc := range []struct {
		name, env string
		want      int64
	}{
		{"from cgroup", "", limit * 3 / 4},
		{"GOMEMLIMIT", "100MiB", 100 << 20},
		{"GOMEMLIMIT off", "off", math.MaxInt64},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestServiceMemoryLimitInCgroup$")
			cmd.Env = append(os.Environ(), memLimitChildEnv+"=1", "GOMEMLIMIT="+tc.env)
			var out bytes.Buffer
			cmd.Stdout, cmd.Stderr = &out, &out
			if err := cg.Start(cmd); err != nil {
				t.Fatal(err)
			}
			if err := cmd.Wait(); err != nil {
				t.Fatalf("child: %v\n%s", err, out.String())
			}
			var got int64 = -1
			for _, line := range strings.Split(out.String(), "\n") {
				if v, ok := strings.CutPrefix(line, "gomemlimit "); ok {
					got, _ = strconv.ParseInt(v, 10, 64)
				}
			}
			if got != tc.want {
				t.Errorf("child's memory limit %d, want %d\n%s", got, tc.want, out.String())
			}
		})
	}
}
