package testutil

import (
	"os"
	"os/signal"
	"syscall"
	"time"
)

// HeldAppMain is the body of a test binary run as an app whose stop the
// test ends: on SIGTERM it writes the file marker+".term", then exits 0 once
// the test has written marker+".release". Its wait for the release has a
// deadline, so that a failed test leaves no process behind for long.
func HeldAppMain(marker string) {
	term := make(chan os.Signal, 1)
	signal.Notify(term, syscall.SIGTERM)
	<-term
	if err := os.WriteFile(marker+".term", nil, 0o644); err != nil {
		os.Exit(1)
	}
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(marker + ".release"); err == nil {
			os.Exit(0)
		}
	}
	os.Exit(1)
}
