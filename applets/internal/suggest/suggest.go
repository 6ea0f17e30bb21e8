// Package suggest guesses which of the names a program knows a name that
// it does not know was meant for: ctl's names of secrets and nodes, and
// the config decoder's keys, give the same guess for the same typo.
package suggest

// Nearest is the one name of among that name is probably a typo of: the
// only one closest to it within two edits, fewer than name has letters;
// "" when there is none or no single one.
func Nearest(name string, among []string) string {
	best, bestD, ties := "", 3, 0
	for _, c := range among {
		if len(name) > len(c)+2 || len(c) > len(name)+2 {
			// Too far apart already, and a config key may be as long as
			// its file: no quadratic work for it.
			continue
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

// editDistance is the Levenshtein distance between a and b, in bytes:
// the names guessed at (keys, secret and node names) are ASCII.
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
