package supervisor

import (
	"fmt"
	"math"
	"time"
)

// Restart modes.
const (
	Always    = "always"
	OnFailure = "on-failure"
	Never     = "never"
)

// Policy decides whether and when an exited process is started again.
type Policy struct {
	// Mode is Always, OnFailure or Never; "" means Always.
	Mode string
	// Initial is the delay before the first restart; 0 means 100ms, so the
	// first retry is fast.
	Initial time.Duration
	// Max caps the delay; 0 means 5 minutes, as Kubernetes' CrashLoopBackOff.
	Max time.Duration
	// Jitter spreads each delay by ± this fraction (0 to 1); 0 means none.
	Jitter float64
	// ResetAfter is how long a process must run for its streak to start
	// again from zero; 0 means 10 minutes.
	ResetAfter time.Duration
	// GiveUp is how many failures in a row (crashes, stops as unhealthy)
	// turn the instance failed; a clean exit breaks the row. 0 means it is
	// restarted for ever.
	GiveUp int
}

// Exit is how a process ended.
type Exit struct {
	// Code is the exit status, or -1 when a signal killed the process.
	Code int
	// Signal is the signal that killed it, "" if it exited.
	Signal string
	// Ran is how long it ran.
	Ran time.Duration
	// Reason, when set, explains the end better than the status.
	Reason string
	// Unhealthy says the supervisor stopped the process for failing its
	// health checks: a failure whatever the exit status, so that backoff
	// and giving up apply as to a crash.
	Unhealthy bool
	// Killed, when set, is the reason of a stop that had to kill the
	// process at the stop timeout; "" for one that ended in time.
	Killed string
}

// Failure reports whether the exit counts as a crash.
func (e Exit) Failure() bool { return e.Code != 0 || e.Unhealthy }

func (e Exit) String() string {
	if e.Reason != "" {
		return e.Reason
	}
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Streak is what a policy remembers of the exits before the current one.
type Streak struct {
	// Exits counts the exits in a row without a stable run, clean or not:
	// it sets the backoff, so a program that keeps exiting at once is
	// restarted ever more slowly whatever its status.
	Exits int
	// Crashes counts the failures in a row, stops as unhealthy included:
	// it decides giving up, which a clean exit must not bring closer.
	Crashes int
}

// Decision is what to do after a process ended.
type Decision struct {
	Restart bool
	Delay   time.Duration
	// Streak is the new streak, to pass to the next Decide.
	Streak Streak
	// GaveUp is set when the instance must be reported failed.
	GaveUp bool
}

func (p Policy) withDefaults() Policy {
	if p.Mode == "" {
		p.Mode = Always
	}
	if p.Initial <= 0 {
		p.Initial = 100 * time.Millisecond
	}
	if p.Max <= 0 {
		p.Max = 5 * time.Minute
	}
	if p.Max < p.Initial {
		p.Max = p.Initial
	}
	if p.ResetAfter <= 0 {
		p.ResetAfter = 10 * time.Minute
	}
	p.Jitter = min(max(p.Jitter, 0), 1)
	return p
}

// Decide applies the policy to an exit, given the streak before it; rnd is
// a random number in [0,1) that places the jitter.
func (p Policy) Decide(e Exit, s Streak, rnd float64) Decision {
	p = p.withDefaults()
	if e.Ran >= p.ResetAfter {
		s = Streak{}
	}
	s.Exits++
	if !e.Failure() {
		s.Crashes = 0
		if p.Mode != Always {
			return Decision{Streak: s}
		}
		return Decision{Restart: true, Delay: p.Delay(s.Exits, rnd), Streak: s}
	}
	s.Crashes++
	if p.Mode == Never || (p.GiveUp > 0 && s.Crashes >= p.GiveUp) {
		return Decision{Streak: s, GaveUp: true}
	}
	return Decision{Restart: true, Delay: p.Delay(s.Exits, rnd), Streak: s}
}

// Delay is the wait before restart number n (1 = first) of a crash loop:
// Initial doubled n-1 times, stretched by up to Jitter of it, capped at
// Max. The stretch only lengthens: a shortened wait, down to none at
// jitter 1, would take the backoff from a crash loop.
func (p Policy) Delay(n int, rnd float64) time.Duration {
	p = p.withDefaults()
	d := float64(p.Initial) * math.Pow(2, float64(max(n, 1)-1))
	d *= 1 + p.Jitter*rnd
	return time.Duration(min(d, float64(p.Max)))
}
