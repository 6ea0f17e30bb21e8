package signing

import (
	"bytes"
	"fmt"
	"strconv"
	"time"
)

// A signature does not say when a value was signed: a value the key
// signed before (an earlier version, an app deleted since), stored again,
// would pass as well as the current one. So ctl signs a sequence with each
// value, higher than any it signed before for the same key, and nodes
// remember the highest they accepted per key (Order) and refuse a lower
// one. In a spec it is a comment line, the last before the trailer; a
// route entry holds it in its JSON.
const sequencePrefix = "# narun-sequence: "

// NextSequence is the sequence to sign a new value with, given the highest
// one signed before for its key (0 when none): the time in milliseconds,
// so that a value signed after a deletion (whose value is gone) still
// comes after it, unless that is not higher than the last, as when an
// operator's clock is behind another's: then the one after it.
func NextSequence(last uint64, now time.Time) uint64 {
	return max(last+1, uint64(max(now.UnixMilli(), 0)))
}

// WithSequence returns body, a spec without its trailer, with the
// sequence line seq in place of the one it had.
func WithSequence(body []byte, seq uint64) []byte {
	out := bytes.Clone(StripSequence(body))
	if len(out) > 0 && out[len(out)-1] != '\n' {
		out = append(out, '\n')
	}
	out = strconv.AppendUint(append(out, sequencePrefix...), seq, 10)
	return append(out, '\n')
}

// StripSequence returns body without its sequence line, if it has one.
func StripSequence(body []byte) []byte {
	rest, _, ok := cutSequence(body)
	if !ok {
		return body
	}
	return rest
}

// Sequence returns the sequence of body, a spec without its trailer; 0
// when it has none (stored by a ctl of an earlier release, or unsigned).
func Sequence(body []byte) (uint64, error) {
	_, line, ok := cutSequence(body)
	if !ok {
		return 0, nil
	}
	seq, err := strconv.ParseUint(line, 10, 64)
	if err != nil || seq == 0 {
		return 0, fmt.Errorf("sequence line %q: want a number above 0", sequencePrefix+line)
	}
	return seq, nil
}

// cutSequence splits the last line of body off when it is a sequence line.
func cutSequence(body []byte) (rest []byte, line string, ok bool) {
	v := bytes.TrimSuffix(body, []byte("\n"))
	i := bytes.LastIndexByte(v, '\n')
	after, found := bytes.CutPrefix(v[i+1:], []byte(sequencePrefix))
	if !found {
		return body, "", false
	}
	return body[:i+1], string(after), true
}
