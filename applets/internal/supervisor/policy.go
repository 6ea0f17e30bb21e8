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
	// ResetAfter is how long a process must run for its crash count to
	// start again from zero; 0 means 10 minutes.
	ResetAfter time.Duration
	// GiveUp is how many crashes in a row turn the instance failed; 0 means
	// it is restarted for ever.
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
}

// Failure reports whether the exit counts as a crash.
func (e Exit) Failure() bool { return e.Code != 0 }

func (e Exit) String() string {
	if e.Reason != "" {
		return e.Reason
	}
	if e.Signal != "" {
		return "killed by " + e.Signal
	}
	return fmt.Sprintf("exit status %d", e.Code)
}

// Decision is what to do after a process ended.
type Decision struct {
	Restart bool
	Delay   time.Duration
	// Crashes is the new count of exits in a row without a stable run.
	Crashes int
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

// Decide applies the policy to an exit, given the crashes in a row before
// it; rnd is a random number in [0,1) that places the jitter.
func (p Policy) Decide(e Exit, crashes int, rnd float64) Decision {
	p = p.withDefaults()
	if e.Ran >= p.ResetAfter {
		crashes = 0
	}
	crashes++
	if !e.Failure() {
		if p.Mode != Always {
			return Decision{}
		}
		// A clean exit is never given up on, but a program that keeps
		// exiting at once still backs off.
		return Decision{Restart: true, Delay: p.Delay(crashes, rnd), Crashes: crashes}
	}
	if p.Mode == Never {
		return Decision{Crashes: crashes, GaveUp: true}
	}
	if p.GiveUp > 0 && crashes >= p.GiveUp {
		return Decision{Crashes: crashes, GaveUp: true}
	}
	return Decision{Restart: true, Delay: p.Delay(crashes, rnd), Crashes: crashes}
}

// Delay is the wait before restart number n (1 = first) of a crash loop:
// Initial doubled n-1 times, capped at Max, spread by Jitter.
func (p Policy) Delay(n int, rnd float64) time.Duration {
	p = p.withDefaults()
	d := float64(p.Initial) * math.Pow(2, float64(max(n, 1)-1))
	d = min(d, float64(p.Max))
	d *= 1 + p.Jitter*(2*rnd-1)
	return time.Duration(d)
}
