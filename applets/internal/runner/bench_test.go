package runner

import (
	"fmt"
	"os"
	"runtime"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/state"
)

// BenchmarkReconcile100Apps deploys 100 one-instance apps on one node and
// reports how long the runner takes to have them all healthy, and its own
// resident memory per instance.
func BenchmarkReconcile100Apps(b *testing.B) {
	const apps = 100
	for range b.N {
		b.StopTimer()
		c := newCluster(b, nil)
		tr := startRunner(b, c, nil)
		c.deploy(b, "app000", "1.0.0", probeBin, "")
		object := fmt.Sprintf("app000/1.0.0/linux-%s", runtime.GOARCH)
		digest := fileDigest(b, probeBin)
		idle, _ := procUsage(os.Getpid())
		b.StartTimer()
		start := time.Now()
		for i := 1; i < apps; i++ {
			c.putSpec(b, fmt.Sprintf("app%03d", i), "1.0.0", object, digest, "")
		}
		healthy := 0
		for healthy < apps {
			healthy = 0
			for _, in := range tr.instances() {
				if in.State == state.Healthy {
					healthy++
				}
			}
			if time.Since(start) > 2*time.Minute {
				b.Fatalf("only %d of %d apps healthy after 2 minutes", healthy, apps)
			}
			time.Sleep(10 * time.Millisecond)
		}
		b.ReportMetric(time.Since(start).Seconds(), "s/100-apps")
		b.StopTimer()
		busy, _ := procUsage(os.Getpid())
		b.ReportMetric(float64(busy.rss-idle.rss)/apps/1024, "runner-KiB/instance")
		tr.stop()
	}
}
