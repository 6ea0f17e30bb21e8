package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"
)

// suggestion is the one name of among that name is probably a typo of:
// the same but for case, or else the only one closest to it within two
// edits (fewer than name has letters); "" when there is none or no single
// one.
func suggestion(name string, among []string) string {
	best, bestD, ties := "", 3, 0
	for _, c := range among {
		if c == name {
			return ""
		}
		if strings.EqualFold(c, name) {
			return c
		}
		switch d := editDistance(name, c); {
		case d >= len(name):
		case d < bestD:
			best, bestD, ties = c, d, 1
		case d == bestD:
			ties++
		}
	}
	if ties != 1 {
		return ""
	}
	return best
}

// didYouMean is " (did you mean "x"?" and then rest and ")", or, with no
// suggestion, " (" rest ")", or "" when rest is empty too.
func didYouMean(name string, among []string, rest string) string {
	s := suggestion(name, among)
	switch {
	case s != "" && rest != "":
		return fmt.Sprintf(" (did you mean %q? if not: %s)", s, rest)
	case s != "":
		return fmt.Sprintf(" (did you mean %q?)", s)
	case rest != "":
		return " (" + rest + ")"
	}
	return ""
}

// editDistance is the Levenshtein distance between a and b, in bytes:
// names are ASCII.
func editDistance(a, b string) int {
	prev, cur := make([]int, len(b)+1), make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// secretNames lists the secrets kv holds, to suggest one for the absent
// ones (none: nothing to list). A guess is not worth failing for: a
// listing that fails suggests nothing.
func (e *env) secretNames(ctx context.Context, kv jetstream.KeyValue, absent []string) []string {
	if len(absent) == 0 {
		return nil
	}
	names, err := e.keys(ctx, kv)
	if err != nil {
		e.log.Debug("list secrets to suggest a name", "err", err)
	}
	return names
}
