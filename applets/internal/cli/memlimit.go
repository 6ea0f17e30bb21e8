package cli

import (
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"

	"github.com/narun/narun/sandbox"
)

// memoryLimitShare is the part of its cgroup's memory limit a service
// gives Go's garbage collector as its soft limit. Go does not read the
// cgroup's limit: without a soft limit the heap grows to twice what is
// live before a collection, and under 64 concurrent 1 MiB uploads
// `narun up` in a 256 MiB cgroup was killed by the kernel at 256 MiB
// while much of its heap was garbage (docs/PERFORMANCE.md, "Small
// devices"). The quarter left is for what Go does not count: the page
// cache of JetStream's files, which a v1 cgroup charges, and the
// kernel's socket buffers.
const memoryLimitShare = 0.75

// SoftMemoryLimit is the soft limit, in bytes, Go's garbage collector
// is given under a memory limit of limit bytes.
func SoftMemoryLimit(limit int64) int64 {
	return int64(float64(limit) * memoryLimitShare)
}

// noMemoryLimit is where a cgroup's limit means none: v1 writes an
// unlimited cgroup's limit as the largest page-aligned int64.
const noMemoryLimit = 1 << 62

// setMemoryLimit gives the garbage collector a soft limit of
// memoryLimitShare of the memory limit of the process's cgroup, unless
// GOMEMLIMIT says what it wants (Go read that at start) or no limit is
// set. The limit is not set in the environment: the apps the runner
// starts would inherit it.
func setMemoryLimit(log *slog.Logger) {
	if os.Getenv("GOMEMLIMIT") != "" {
		log.Debug("memory limit from GOMEMLIMIT", "bytes", debug.SetMemoryLimit(-1))
		return
	}
	limit, err := cgroupMemoryLimit("/")
	if err != nil {
		log.Warn("cgroup memory limit not read; Go's garbage collector runs without a soft limit (set GOMEMLIMIT)", "err", err)
		return
	}
	if limit == 0 {
		return
	}
	soft := SoftMemoryLimit(limit)
	debug.SetMemoryLimit(soft)
	log.Info("memory limit from cgroup", "cgroup_bytes", limit, "gomemlimit_bytes", soft)
}

// cgroupMemoryLimit is the memory limit of the cgroup the process is in,
// the lowest of its own and its parents' as far as they are visible, in
// bytes; 0 when there is none or the machine has no memory controller.
// Its files are read under root, "/" but for tests. A v1 memory
// hierarchy is preferred: in the hybrid layout the v2 one has no memory
// controller.
func cgroupMemoryLimit(root string) (int64, error) {
	own, err := os.ReadFile(filepath.Join(root, "proc/self/cgroup"))
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read own cgroups: %w", err)
	}
	var v1Path, v2Path string
	v1Found, v2Found := false, false
	for _, line := range strings.Split(string(own), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		switch {
		case parts[0] == "0" && parts[1] == "":
			v2Path, v2Found = parts[2], true
		case strings.Contains(","+parts[1]+",", ",memory,"):
			v1Path, v1Found = parts[2], true
		}
	}
	if !v1Found && !v2Found {
		return 0, nil
	}
	v1Mount, v2Mount, err := memoryMounts(root)
	if err != nil {
		return 0, err
	}
	if v1Found && v1Mount.point != "" {
		return v1MemoryLimit(filepath.Join(root, v1Mount.dir(v1Path)))
	}
	if v2Found && v2Mount.point != "" {
		return v2MemoryLimit(filepath.Join(root, v2Mount.point), filepath.Join(root, v2Mount.dir(v2Path)))
	}
	return 0, nil
}

// cgroupMount is a mounted cgroup hierarchy: where it is mounted, and
// which of its cgroups is at that point (not "/" inside a container).
type cgroupMount struct {
	point, root string
}

// dir is the directory of the cgroup at path, as /proc/self/cgroup
// gives it, under the mount.
func (m cgroupMount) dir(path string) string {
	if m.root == "/" {
		return filepath.Join(m.point, path)
	}
	if path == m.root || strings.HasPrefix(path, m.root+"/") {
		return filepath.Join(m.point, strings.TrimPrefix(path, m.root))
	}
	// A cgroup outside what is mounted here: the closest there is to
	// it is the mount itself.
	return m.point
}

// memoryMounts finds the v1 hierarchy of the memory controller and the v2
// hierarchy in the mount table under root; a point is "" when absent.
func memoryMounts(root string) (v1, v2 cgroupMount, err error) {
	table, err := os.ReadFile(filepath.Join(root, "proc/self/mountinfo"))
	if err != nil {
		return v1, v2, fmt.Errorf("read mount table: %w", err)
	}
	for _, m := range sandbox.ParseCgroupMounts(table) {
		switch {
		case m.Version == 2:
			v2 = cgroupMount{point: m.Point, root: m.Root}
		case slices.Contains(m.Options, "memory"):
			v1 = cgroupMount{point: m.Point, root: m.Root}
		}
	}
	return v1, v2, nil
}

// v1MemoryLimit reads the limit of the v1 memory cgroup dir: the lower of
// its own and hierarchical_memory_limit, which the kernel keeps as the
// lowest of its ancestors'.
func v1MemoryLimit(dir string) (int64, error) {
	limit, err := readLimit(filepath.Join(dir, "memory.limit_in_bytes"))
	if err != nil {
		return 0, err
	}
	stat, err := os.ReadFile(filepath.Join(dir, "memory.stat"))
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return 0, fmt.Errorf("read cgroup memory figures: %w", err)
	}
	for _, line := range strings.Split(string(stat), "\n") {
		if v, ok := strings.CutPrefix(line, "hierarchical_memory_limit "); ok {
			h, err := parseLimit(v)
			if err != nil {
				return 0, fmt.Errorf("read %s: %w", filepath.Join(dir, "memory.stat"), err)
			}
			limit = lowestLimit(limit, h)
		}
	}
	return limit, nil
}

// v2MemoryLimit reads memory.max and memory.high of dir and of each of
// its parents up to the hierarchy's mount point, and gives the lowest:
// above memory.high (systemd's MemoryHigh=) the kernel is not yet
// killing, but it throttles the process and reclaims its pages hard.
func v2MemoryLimit(mount, dir string) (int64, error) {
	var limit int64
	for d := dir; ; d = filepath.Dir(d) {
		for _, f := range []string{"memory.max", "memory.high"} {
			l, err := readLimit(filepath.Join(d, f))
			if err != nil {
				return 0, err
			}
			limit = lowestLimit(limit, l)
		}
		if d == mount || !strings.HasPrefix(d, mount+"/") {
			return limit, nil
		}
	}
}

// readLimit reads a limit file: 0 for "max", an unlimited v1 value, or a
// file that is not there (the root cgroup, no memory controller).
func readLimit(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read cgroup memory limit: %w", err)
	}
	limit, err := parseLimit(string(data))
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	return limit, nil
}

// parseLimit reads one limit value; 0 means none.
func parseLimit(s string) (int64, error) {
	s = strings.TrimSpace(s)
	if s == "max" {
		return 0, nil
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("memory limit %q: %w", s, err)
	}
	if v >= noMemoryLimit {
		return 0, nil
	}
	return int64(v), nil
}

// lowestLimit is the lower of two limits, where 0 is none.
func lowestLimit(a, b int64) int64 {
	switch {
	case a == 0:
		return b
	case b == 0:
		return a
	}
	return min(a, b)
}
