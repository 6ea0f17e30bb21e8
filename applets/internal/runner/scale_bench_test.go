package runner

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkStartStop has a runner start n one-instance apps of one binary,
// whose specs are all in narun-apps when it starts, and then stop them.
// s/start and s/stop should grow in proportion to n: each instance's
// start or stop waiting on all the others' is what it guards against
// (docs/PERFORMANCE.md, "Many instances"). The figures are wall clock:
// compare them on a machine that does nothing else.
func BenchmarkStartStop(b *testing.B) {
	for _, n := range []int{100, 400} {
		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for range b.N {
				c := newCluster(b, nil)
				object := c.upload(b, "app0000", "1.0.0", probeBin)
				digest := fileDigest(b, probeBin)
				for i := range n {
					c.putSpec(b, fmt.Sprintf("app%04d", i), "1.0.0", object, digest, "")
				}
				start := time.Now()
				tr := startRunner(b, c, nil)
				for running := 0; running < n; {
					running = 0
					for _, in := range tr.instances() {
						if in.PID > 0 {
							running++
						}
					}
					if time.Since(start) > 3*time.Minute {
						b.Fatalf("only %d of %d instances running after 3 minutes", running, n)
					}
					time.Sleep(10 * time.Millisecond)
				}
				b.ReportMetric(time.Since(start).Seconds(), "s/start")
				stop := time.Now()
				tr.stop()
				b.ReportMetric(time.Since(stop).Seconds(), "s/stop")
			}
		})
	}
}
