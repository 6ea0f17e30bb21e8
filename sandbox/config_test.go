package sandbox

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// A host user given subordinate ids (useradd's default: 65536 of them from
// 100000 on, for each new user) may become any of them in a user namespace
// of its own, with newuidmap and newgidmap, setuid helpers found wherever
// rootless containers run. An app's derived uid among them would be that
// user's: its files, secret files included (mode 0400, the app's), and
// the /proc/PID/environ of its processes, secrets in its environment.
func TestAppIDNotASubordinateID(t *testing.T) {
	type span struct {
		what        string
		first, last uint64
	}
	spans := []span{
		// login.defs: SUB_UID_MIN 100000, SUB_UID_MAX 600100000, SUB_UID_COUNT 65536.
		{"useradd's subordinate ids", 100000, 600100000 + 65536 - 1},
		{"systemd-nspawn's container ranges", 0x80000, 0x6FFFFFFF},
		{"systemd's foreign range", 0x7FFE0000, 0x7FFEFFFF},
		{"ids that are negative as int32", 1 << 31, 1<<32 - 1},
		{"regular and system users", 0, 60000},
		{"systemd's dynamic users and nobody", 61184, 65535},
	}
	// And those this host hands out.
	for _, file := range []string{"/etc/subuid", "/etc/subgid"} {
		data, err := os.ReadFile(file)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(data), "\n") {
			f := strings.Split(strings.TrimSpace(line), ":")
			if len(f) != 3 {
				continue
			}
			first, err1 := strconv.ParseUint(f[1], 10, 32)
			count, err2 := strconv.ParseUint(f[2], 10, 32)
			if err1 == nil && err2 == nil && count > 0 {
				spans = append(spans, span{fmt.Sprintf("%s of %s", file, f[0]), first, first + count - 1})
			}
		}
	}
	for i := range 100000 {
		name := fmt.Sprintf("app-%d", i)
		id := uint64(AppID(name))
		for _, s := range spans {
			if id >= s.first && id <= s.last {
				t.Fatalf("AppID(%q) = %d lies among %s (%d..%d)", name, id, s.what, s.first, s.last)
			}
		}
	}
}
