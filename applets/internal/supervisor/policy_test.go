package supervisor

import (
	"strings"
	"testing"
	"time"
)

func TestPolicyDelay(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	tests := []struct {
		n    int
		rnd  float64
		pol  Policy
		want time.Duration
	}{
		{n: 1, rnd: 0.5, pol: p, want: 100 * time.Millisecond},
		{n: 2, rnd: 0.5, pol: p, want: 200 * time.Millisecond},
		{n: 4, rnd: 0.5, pol: p, want: 800 * time.Millisecond},
		{n: 5, rnd: 0.5, pol: p, want: time.Second},
		{n: 60, rnd: 0.5, pol: p, want: time.Second},
		{n: 0, rnd: 0.5, pol: p, want: 100 * time.Millisecond},
		{n: 1, rnd: 0, pol: Policy{Initial: time.Second, Jitter: 0.5}, want: time.Second},
		{n: 1, rnd: 1, pol: Policy{Initial: time.Second, Jitter: 0.5}, want: 1500 * time.Millisecond},
		// Jitter stretches and never shortens, and max_backoff caps it.
		{n: 1, rnd: 0, pol: Policy{Initial: time.Second, Jitter: 1}, want: time.Second},
		{n: 40, rnd: 0.99, pol: Policy{Jitter: 0.2}, want: 5 * time.Minute},
		{n: 1, rnd: 0.5, pol: Policy{}, want: 100 * time.Millisecond},
		{n: 40, rnd: 0.5, pol: Policy{}, want: 5 * time.Minute},
		{n: 1, rnd: 0.5, pol: Policy{Initial: time.Minute, Max: time.Second}, want: time.Minute},
	}
	for _, tt := range tests {
		if got := tt.pol.Delay(tt.n, tt.rnd); got != tt.want {
			t.Errorf("%+v.Delay(%d, %v) = %v, want %v", tt.pol, tt.n, tt.rnd, got, tt.want)
		}
	}
}

func TestPolicyDecide(t *testing.T) {
	crash := Exit{Code: 3, Ran: time.Second}
	killed := Exit{Code: -1, Signal: "killed", Ran: time.Second}
	clean := Exit{Code: 0, Ran: time.Second}
	stable := Exit{Code: 3, Ran: time.Hour}
	base := Policy{Initial: 100 * time.Millisecond, Max: 10 * time.Second, GiveUp: 3, ResetAfter: time.Minute}
	tests := []struct {
		name   string
		pol    Policy
		exit   Exit
		streak Streak
		want   Decision
	}{
		{"first crash restarts fast", base, crash, Streak{}, Decision{Restart: true, Delay: 100 * time.Millisecond, Streak: Streak{1, 1}}},
		{"second crash doubles", base, crash, Streak{1, 1}, Decision{Restart: true, Delay: 200 * time.Millisecond, Streak: Streak{2, 2}}},
		{"signal is a crash", base, killed, Streak{1, 1}, Decision{Restart: true, Delay: 200 * time.Millisecond, Streak: Streak{2, 2}}},
		{"threshold gives up", base, crash, Streak{2, 2}, Decision{Streak: Streak{3, 3}, GaveUp: true}},
		{"stable run resets the streak", base, stable, Streak{2, 2}, Decision{Restart: true, Delay: 100 * time.Millisecond, Streak: Streak{1, 1}}},
		{"no threshold never gives up", Policy{}, crash, Streak{1000, 1000}, Decision{Restart: true, Delay: 5 * time.Minute, Streak: Streak{1001, 1001}}},
		{"always restarts a clean exit", base, clean, Streak{}, Decision{Restart: true, Delay: 100 * time.Millisecond, Streak: Streak{1, 0}}},
		{"clean exits back off but never give up", base, clean, Streak{5, 0}, Decision{Restart: true, Delay: 3200 * time.Millisecond, Streak: Streak{6, 0}}},
		{"a clean exit breaks the crash row", base, clean, Streak{2, 2}, Decision{Restart: true, Delay: 400 * time.Millisecond, Streak: Streak{3, 0}}},
		{"clean exits do not count toward giving up", base, crash, Streak{2, 0}, Decision{Restart: true, Delay: 400 * time.Millisecond, Streak: Streak{3, 1}}},
		{"on-failure keeps a clean exit stopped", Policy{Mode: OnFailure}, clean, Streak{2, 2}, Decision{Streak: Streak{3, 0}}},
		{"on-failure restarts a crash", Policy{Mode: OnFailure}, crash, Streak{}, Decision{Restart: true, Delay: 100 * time.Millisecond, Streak: Streak{1, 1}}},
		{"never fails a crash", Policy{Mode: Never}, crash, Streak{}, Decision{Streak: Streak{1, 1}, GaveUp: true}},
		{"never stops a clean exit", Policy{Mode: Never}, clean, Streak{}, Decision{Streak: Streak{1, 0}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := tt.pol.Decide(tt.exit, tt.streak, 0.5); got != tt.want {
				t.Errorf("Decide(%v, %+v) = %+v, want %+v", tt.exit, tt.streak, got, tt.want)
			}
		})
	}
}

// max_failures counts failures in a row: with policy "always" and 3, two
// clean exits then a crash is one failure, not a third.
func TestPolicyGiveUpCountsOnlyFailures(t *testing.T) {
	p := Policy{GiveUp: 3}
	var s Streak
	for i, e := range []Exit{{Code: 0}, {Code: 0}, {Code: 1}, {Code: 1}, {Code: 0}, {Code: 1}, {Code: 1}} {
		d := p.Decide(e, s, 0.5)
		if d.GaveUp || !d.Restart {
			t.Fatalf("exit %d (%v) after %+v: %+v, want a restart", i, e, s, d)
		}
		s = d.Streak
	}
	if d := p.Decide(Exit{Code: 1}, s, 0.5); !d.GaveUp {
		t.Errorf("third crash in a row after %+v: %+v, want give-up", s, d)
	}
}

func TestSplitLines(t *testing.T) {
	type part struct {
		line    string
		partial bool
	}
	tests := []struct {
		name string
		in   string
		want []part
	}{
		{"lines", "a\nbb\r\n", []part{{"a", false}, {"bb", false}}},
		{"unterminated last line", "a\nb", []part{{"a", false}, {"b", false}}},
		{"long line split", "abcdefghijklmnopqrstuvwxyz0123456789\nk\n", []part{{"abcdefghijklmnop", true}, {"qrstuvwxyz012345", true}, {"6789", false}, {"k", false}}},
		{"empty", "", nil},
		{"blank lines kept", "\n\n", []part{{"", false}, {"", false}}},
		// Each part is published as a JSON string on its own: a rune cut
		// in two would come out as two U+FFFD, the character lost.
		{"rune kept whole", "abcdefghijklmn€opq\n", []part{{"abcdefghijklmn", true}, {"€opq", false}}},
		{"bytes that are not UTF-8 cut anywhere", "abcdefghijklmno\xffp\n", []part{{"abcdefghijklmno\xff", true}, {"p", false}}},
		{"runes across several parts", strings.Repeat("€", 11) + "\n", []part{{strings.Repeat("€", 5), true}, {strings.Repeat("€", 5), true}, {"€", false}}},
		// A line of maxLine bytes is kept whole, its ending read or not.
		{"line of the longest length", strings.Repeat("x", 16) + "\nnext\n", []part{{strings.Repeat("x", 16), false}, {"next", false}}},
		{"longest line ending in CRLF", strings.Repeat("x", 16) + "\r\nnext\n", []part{{strings.Repeat("x", 16), false}, {"next", false}}},
		{"shorter line ending in CRLF", strings.Repeat("x", 15) + "\r\nnext\n", []part{{strings.Repeat("x", 15), false}, {"next", false}}},
		{"one byte over", strings.Repeat("x", 17) + "\n", []part{{strings.Repeat("x", 16), true}, {"x", false}}},
		{"longest unterminated last line", strings.Repeat("x", 16), []part{{strings.Repeat("x", 16), false}}},
		{"only one CR is the ending's", "a\r\r\n", []part{{"a\r", false}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []part
			splitLines(strings.NewReader(tt.in), 16, func(b []byte, partial bool) {
				got = append(got, part{string(b), partial})
			})
			if len(got) != len(tt.want) {
				t.Fatalf("got %+v, want %+v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Errorf("part %d = %+v, want %+v", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		add  int
		want []int
	}{
		{0, nil},
		{2, []int{0, 1}},
		{3, []int{0, 1, 2}},
		{7, []int{4, 5, 6}},
	}
	for _, tt := range tests {
		r := newRing[int](3)
		for i := range tt.add {
			r.add(i)
		}
		got := r.all()
		if len(got) != len(tt.want) {
			t.Fatalf("after %d adds: %v, want %v", tt.add, got, tt.want)
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("after %d adds: %v, want %v", tt.add, got, tt.want)
			}
		}
	}
}
