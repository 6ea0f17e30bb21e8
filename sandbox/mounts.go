package sandbox

import "strings"

// CgroupMount is a cgroup hierarchy as the mount table lists it.
type CgroupMount struct {
	// Version is 1 or 2.
	Version int
	// Point is where it is mounted.
	Point string
	// Root is the cgroup at Point: "/" but where the mount shows only
	// part of the hierarchy (a container's).
	Root string
	// Options are the super options, which for v1 name its controllers.
	Options []string
}

// ParseCgroupMounts lists the cgroup hierarchies of mountinfo, a mount
// table in the format of /proc/self/mountinfo, in its order.
func ParseCgroupMounts(mountinfo []byte) []CgroupMount {
	var mounts []CgroupMount
	for line := range strings.Lines(string(mountinfo)) {
		pre, post, ok := strings.Cut(strings.TrimSuffix(line, "\n"), " - ")
		if !ok {
			continue
		}
		f, pf := strings.Fields(pre), strings.Fields(post)
		if len(f) < 5 || len(pf) < 3 {
			continue
		}
		m := CgroupMount{Point: f[4], Root: f[3], Options: strings.Split(pf[2], ",")}
		switch pf[0] {
		case "cgroup2":
			m.Version = 2
		case "cgroup":
			m.Version = 1
		default:
			continue
		}
		mounts = append(mounts, m)
	}
	return mounts
}
