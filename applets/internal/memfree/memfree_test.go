package memfree

import (
	"testing"
	"time"
)

// A burst of triggers runs f once, after the last of them.
func TestDebounceCoalesces(t *testing.T) {
	t.Parallel()
	ran := make(chan time.Time, 10)
	b := NewDebounce(50*time.Millisecond, func() { ran <- time.Now() })
	var last time.Time
	for range 5 {
		last = time.Now()
		b.Trigger()
	}
	at := <-ran
	if at.Sub(last) < 50*time.Millisecond {
		t.Errorf("ran %s after the last trigger, before the delay", at.Sub(last))
	}
	select {
	case <-ran:
		t.Error("ran twice for one burst")
	case <-time.After(200 * time.Millisecond):
	}
	b.Trigger()
	<-ran
}
