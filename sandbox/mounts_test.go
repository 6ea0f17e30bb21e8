package sandbox

import (
	"reflect"
	"testing"
)

// The hybrid layout of this machine's kind: v1 controllers, an empty v2 at
// unified, and a container's mount that shows part of a hierarchy.
func TestParseCgroupMounts(t *testing.T) {
	t.Parallel()
	table := `22 1 0:21 / / rw,relatime - ext4 /dev/sda1 rw
30 22 0:26 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
31 22 0:27 / /sys/fs/cgroup/memory rw,nosuid - cgroup cgroup rw,memory
32 22 0:28 /docker/abc /sys/fs/cgroup/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct
33 22 0:29 / /proc rw - proc proc rw
broken line
`
	want := []CgroupMount{
		{Version: 2, Point: "/sys/fs/cgroup/unified", Root: "/", Options: []string{"rw", "nsdelegate"}},
		{Version: 1, Point: "/sys/fs/cgroup/memory", Root: "/", Options: []string{"rw", "memory"}},
		{Version: 1, Point: "/sys/fs/cgroup/cpu,cpuacct", Root: "/docker/abc", Options: []string{"rw", "cpu", "cpuacct"}},
	}
	if got := ParseCgroupMounts([]byte(table)); !reflect.DeepEqual(got, want) {
		t.Errorf("ParseCgroupMounts:\n got %+v\nwant %+v", got, want)
	}
}
