package embednats

import (
	"net/netip"
	"strings"
)

// ListenableHost reports whether a listener could take host: none (every
// address), an IP address, or a name as Go's resolver reads one, which
// refuses any other ("1.2.3.4.5", "a b") without a lookup. Whether a
// name resolves is left to the start: it may not, yet, where --check
// runs.
func ListenableHost(host string) bool {
	if host == "" {
		return true
	}
	if _, err := netip.ParseAddr(host); err == nil {
		return true
	}
	// RFC 1035 and 3696, as Go's net package reads them: labels of
	// letters, digits, '-' and '_', 1 to 63 bytes, neither starting nor
	// ending with '-', at most 253 bytes in all (a trailing dot aside),
	// and not all digits, which only an IP address may be.
	if len(strings.TrimSuffix(host, ".")) > 253 {
		return false
	}
	nonNumeric := false
	for label := range strings.SplitSeq(strings.TrimSuffix(host, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for _, c := range []byte(label) {
			switch {
			case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', c == '_', c == '-':
				nonNumeric = true
			case '0' <= c && c <= '9':
			default:
				return false
			}
		}
	}
	return nonNumeric
}
