package signing

import (
	"strings"
	"testing"
	"time"
)

func TestSequenceLine(t *testing.T) {
	body := []byte("name = \"a\"\nversion = \"1\"")
	seqd := WithSequence(body, 42)
	if want := "name = \"a\"\nversion = \"1\"\n# narun-sequence: 42\n"; string(seqd) != want {
		t.Fatalf("WithSequence: %q, want %q", seqd, want)
	}
	if seq, err := Sequence(seqd); err != nil || seq != 42 {
		t.Errorf("Sequence: %d, %v", seq, err)
	}
	// A value signed again gets one line, the new one, not a second.
	again := WithSequence(seqd, 43)
	if strings.Count(string(again), "narun-sequence") != 1 || !strings.HasSuffix(string(again), "# narun-sequence: 43\n") {
		t.Errorf("WithSequence over a sequence line: %q", again)
	}
	if got := StripSequence(seqd); string(got) != "name = \"a\"\nversion = \"1\"\n" {
		t.Errorf("StripSequence: %q", got)
	}
	if seq, err := Sequence(body); err != nil || seq != 0 {
		t.Errorf("Sequence of a body without one: %d, %v", seq, err)
	}
	// Only the last line counts: one further up is a comment like others.
	if seq, err := Sequence([]byte("# narun-sequence: 7\nname = \"a\"\n")); err != nil || seq != 0 {
		t.Errorf("Sequence of a line that is not the last: %d, %v", seq, err)
	}
	for _, bad := range []string{"# narun-sequence: x\n", "# narun-sequence: 0\n", "# narun-sequence: -1\n"} {
		if _, err := Sequence([]byte(bad)); err == nil || !strings.Contains(err.Error(), "sequence line") {
			t.Errorf("Sequence(%q): %v, want an error naming the sequence line", bad, err)
		}
	}
	// Signed, the line is covered like every byte before the trailer.
	k := newKey(t)
	v, err := NewVerifier("trusted_keys", []string{k.Public()})
	if err != nil {
		t.Fatal(err)
	}
	signed := k.Sign(seqd)
	tampered := []byte(strings.Replace(string(signed), "sequence: 42", "sequence: 99", 1))
	if _, err := v.Verify(tampered); err == nil {
		t.Error("a changed sequence passes the signature")
	}
}

func TestNextSequence(t *testing.T) {
	now := time.UnixMilli(1_000_000)
	if got := NextSequence(0, now); got != 1_000_000 {
		t.Errorf("first sequence: %d, want the time in ms", got)
	}
	if got := NextSequence(5, now); got != 1_000_000 {
		t.Errorf("after an older one: %d, want the time in ms", got)
	}
	// Another operator's clock is ahead: still after its value.
	if got := NextSequence(2_000_000, now); got != 2_000_001 {
		t.Errorf("after one from a clock ahead: %d, want 2000001", got)
	}
}
