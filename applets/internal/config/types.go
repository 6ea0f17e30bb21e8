package config

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Duration is a time.Duration written as a Go duration string ("30s", "5m").
type Duration time.Duration

// UnmarshalText parses a Go duration string.
func (d *Duration) UnmarshalText(b []byte) error {
	v, err := time.ParseDuration(string(b))
	switch {
	// ParseDuration says the same of a duration past its range as of one
	// written wrong: "10000000h" is written right.
	case err != nil && durationRe.Match(b) && b[0] == '-':
		return fmt.Errorf("invalid duration %q: must not be negative", b)
	case err != nil && durationRe.Match(b):
		return fmt.Errorf("invalid duration %q: more than the largest, %s", b, time.Duration(math.MaxInt64))
	case err != nil:
		return fmt.Errorf("invalid duration %q: want e.g. \"500ms\", \"30s\", \"5m\"", b)
	}
	if v < 0 {
		return fmt.Errorf("invalid duration %q: must not be negative", b)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalTOML accepts a string, and the integer 0 that needs no unit
// (as UnmarshalText did when the decoder called it with "0"); for any other
// value it says what is wanted, where the decoder would name Go types.
func (d *Duration) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case string:
		return d.UnmarshalText([]byte(x))
	case int64:
		if x == 0 {
			*d = 0
			return nil
		}
	}
	return fmt.Errorf("want a duration such as \"30s\", got %s", TOMLKind(v))
}

// durationRe is the syntax of time.ParseDuration.
var durationRe = regexp.MustCompile(`^[-+]?(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+$`)

// MarshalText writes the duration back in Go syntax.
func (d Duration) MarshalText() ([]byte, error) { return []byte(time.Duration(d).String()), nil }

// D returns the value as a time.Duration.
func (d Duration) D() time.Duration { return time.Duration(d) }

// Size is a byte count written as a number or with a unit ("64MiB", "1MB",
// "512KiB", "1TiB": the largest memory limit of a spec is written so).
type Size int64

var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1000}, {"MB", 1000 * 1000}, {"GB", 1000 * 1000 * 1000}, {"TB", 1000 * 1000 * 1000 * 1000},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40}, {"B", 1},
}

// maxSize is the largest size ParseSize reads: two of them add up
// within int64.
const maxSize = 1 << 62

// ParseSize reads a byte count such as "64MiB" or "1048576".
func ParseSize(s string) (Size, error) {
	t := strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSpace(strings.TrimSuffix(t, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if errors.Is(err, strconv.ErrRange) && !strings.HasPrefix(t, "-") || err == nil && n > maxSize/mult {
		return 0, fmt.Errorf("invalid size %q: more than the largest, %dTiB", s, maxSize>>40)
	}
	if err != nil || n < 0 {
		return 0, fmt.Errorf("invalid size %q: want a whole number with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s)
	}
	return Size(n * mult), nil
}

// UnmarshalText parses a size string.
func (s *Size) UnmarshalText(b []byte) error {
	v, err := ParseSize(string(b))
	if err != nil {
		return err
	}
	*s = v
	return nil
}

// UnmarshalTOML accepts both a bare integer and a string with a unit.
func (s *Size) UnmarshalTOML(v any) error {
	switch x := v.(type) {
	case int64:
		if x < 0 {
			return fmt.Errorf("invalid size %d: must not be negative", x)
		}
		*s = Size(x)
		return nil
	case string:
		return s.UnmarshalText([]byte(x))
	default:
		return fmt.Errorf("want a size such as \"64MiB\" or a number of bytes, got %s", TOMLKind(v))
	}
}

// UnmarshalJSON accepts what UnmarshalTOML accepts: the routes that ctl
// writes to narun-routes carry sizes as numbers, people write strings.
// A number is read exactly: as a float64 one past 2^53 was rounded, and
// one past int64's range converted differently on each architecture.
func (s *Size) UnmarshalJSON(b []byte) error {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return err
	}
	n, ok := v.(json.Number)
	if !ok {
		return s.UnmarshalTOML(v)
	}
	// 64 bits of mantissa hold every int64 exactly: a number that is
	// rounded to them is no whole number of bytes in range.
	f, _, err := big.ParseFloat(n.String(), 10, 64, big.ToNearestEven)
	if err == nil && f.IsInt() && f.Acc() == big.Exact {
		if i, acc := f.Int64(); acc == big.Exact {
			return s.UnmarshalTOML(i)
		}
	}
	return fmt.Errorf("invalid size %s: want a whole number of bytes, at most %d", b, int64(math.MaxInt64))
}

// Count is a number of things: 0 to 1<<30, where a uint would take -1 for
// its largest value.
type Count int

// UnmarshalTOML accepts an integer in range.
func (c *Count) UnmarshalTOML(v any) error {
	x, ok := v.(int64)
	if !ok {
		return fmt.Errorf("want a whole number, got %s", TOMLKind(v))
	}
	if x < 0 || x > 1<<30 {
		return fmt.Errorf("want 0..%d, got %d", 1<<30, x)
	}
	*c = Count(x)
	return nil
}
