package sandbox

import (
	"os"
	"strconv"
)

// AppOOMScoreAdj is the oom_score_adj of every app process: when the
// whole device runs out of memory, the kernel's OOM killer then ends an
// app before narun, its NATS server and the system's own services, as
// Docker and the kubelet weigh containers against themselves. An app's
// own [resources] memory limit is a cgroup's, whose OOM kills ignore
// this. Raising it needs no privilege.
const AppOOMScoreAdj = 500

// RaiseOOMScore sets the oom_score_adj of process pid, as the caller's
// /proc numbers it, to AppOOMScoreAdj. Its children inherit it from
// their fork on.
func RaiseOOMScore(pid int) error {
	return raiseOOMScore("/proc/" + strconv.Itoa(pid) + "/oom_score_adj")
}

func raiseOOMScore(file string) error {
	return os.WriteFile(file, []byte(strconv.Itoa(AppOOMScoreAdj)), 0)
}
