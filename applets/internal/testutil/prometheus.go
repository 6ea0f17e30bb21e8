package testutil

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// CheckExposition reads text as a Prometheus scraper of the text format
// 0.0.4 would, and more strictly: it returns every way text breaks the
// format. Each family has at most one HELP and one TYPE, the TYPE before its
// samples, and its samples together; no series appears twice; label values
// use only the escapes \\, \" and \n; a histogram has, for each of its
// series, buckets in increasing le whose counts never fall, one le="+Inf"
// equal to _count, and a _sum. narun writes its metrics by hand, without a
// client library to keep it to the format.
func CheckExposition(text string) error {
	var errs []error
	fail := func(line int, format string, args ...any) {
		errs = append(errs, fmt.Errorf("line %d: %s", line, fmt.Sprintf(format, args...)))
	}
	if text != "" && !strings.HasSuffix(text, "\n") {
		errs = append(errs, errors.New("the last line has no newline"))
	}
	types := map[string]string{}
	helps := map[string]bool{}
	done := map[string]bool{} // families whose samples ended
	current := ""
	seen := map[string]bool{}
	type bucket struct {
		le    float64
		count float64
	}
	type histogram struct {
		buckets  []bucket
		count    float64
		hasCount bool
		hasSum   bool
	}
	histograms := map[string]*histogram{} // by family and labels but le
	var order []string
	enter := func(line int, family string) {
		if family == current {
			return
		}
		if current != "" {
			done[current] = true
		}
		if done[family] {
			fail(line, "family %s continues after another one", family)
		}
		current = family
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		n := i + 1
		if line == "" {
			continue
		}
		if strings.HasPrefix(line, "#") {
			fields := strings.SplitN(line, " ", 4)
			if len(fields) < 3 || fields[0] != "#" || (fields[1] != "HELP" && fields[1] != "TYPE") {
				continue // a comment
			}
			name := fields[2]
			if !metricName.MatchString(name) {
				fail(n, "%s of %q: not a metric name", fields[1], name)
			}
			enter(n, name)
			if fields[1] == "HELP" {
				if helps[name] {
					fail(n, "second HELP of %s", name)
				}
				helps[name] = true
				continue
			}
			if _, ok := types[name]; ok {
				fail(n, "second TYPE of %s", name)
			}
			if len(fields) != 4 || !slices.Contains([]string{"counter", "gauge", "histogram", "summary", "untyped"}, fields[3]) {
				fail(n, "TYPE of %s: %q is no type", name, strings.Join(fields[3:], " "))
				continue
			}
			if seen[name] {
				fail(n, "TYPE of %s after its samples", name)
			}
			types[name] = fields[3]
			continue
		}
		name, labels, value, err := parseSample(line)
		if err != nil {
			fail(n, "%v: %q", err, line)
			continue
		}
		family := name
		for _, suffix := range []string{"_bucket", "_sum", "_count"} {
			if base, ok := strings.CutSuffix(name, suffix); ok && types[base] == "histogram" {
				family = base
			}
		}
		enter(n, family)
		seen[family] = true
		key := name + "{" + strings.Join(sortedPairs(labels), ",") + "}"
		if seen[key] {
			fail(n, "series %s twice", key)
		}
		seen[key] = true
		if types[family] != "histogram" {
			continue
		}
		le, hasLE := labels["le"]
		delete(labels, "le")
		hkey := family + "{" + strings.Join(sortedPairs(labels), ",") + "}"
		h := histograms[hkey]
		if h == nil {
			h = &histogram{}
			histograms[hkey] = h
			order = append(order, hkey)
		}
		switch name {
		case family + "_bucket":
			if !hasLE {
				fail(n, "bucket without le")
				continue
			}
			bound, err := parseValue(le)
			if err != nil {
				fail(n, "le %q: %v", le, err)
				continue
			}
			if k := len(h.buckets); k > 0 {
				if bound <= h.buckets[k-1].le {
					fail(n, "le %s after le %v", le, h.buckets[k-1].le)
				}
				if value < h.buckets[k-1].count {
					fail(n, "bucket le=%s counts %v, fewer than the one before (%v): buckets are cumulative", le, value, h.buckets[k-1].count)
				}
			}
			h.buckets = append(h.buckets, bucket{bound, value})
		case family + "_count":
			h.count, h.hasCount = value, true
		case family + "_sum":
			h.hasSum = true
		default:
			fail(n, "%s in histogram %s", name, family)
		}
	}
	for _, hkey := range order {
		h := histograms[hkey]
		k := len(h.buckets)
		switch {
		case k == 0 || !math.IsInf(h.buckets[k-1].le, 1):
			errs = append(errs, fmt.Errorf("histogram %s has no le=\"+Inf\" bucket", hkey))
		case !h.hasCount:
			errs = append(errs, fmt.Errorf("histogram %s has no _count", hkey))
		case h.count != h.buckets[k-1].count:
			errs = append(errs, fmt.Errorf("histogram %s: _count %v, le=\"+Inf\" %v", hkey, h.count, h.buckets[k-1].count))
		}
		if !h.hasSum {
			errs = append(errs, fmt.Errorf("histogram %s has no _sum", hkey))
		}
	}
	return errors.Join(errs...)
}

var (
	metricName = regexp.MustCompile(`^[a-zA-Z_:][a-zA-Z0-9_:]*$`)
	labelName  = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
)

// parseSample reads `name{label="value",...} value` (a timestamp is not
// something narun writes, so it is refused too).
func parseSample(line string) (string, map[string]string, float64, error) {
	end := strings.IndexAny(line, "{ ")
	if end < 0 {
		return "", nil, 0, errors.New("no value")
	}
	name, rest := line[:end], line[end:]
	if !metricName.MatchString(name) {
		return "", nil, 0, fmt.Errorf("%q is no metric name", name)
	}
	labels := map[string]string{}
	if strings.HasPrefix(rest, "{") {
		rest = rest[1:]
		for !strings.HasPrefix(rest, "}") {
			eq := strings.Index(rest, `="`)
			if eq < 0 {
				return "", nil, 0, errors.New("a label without =\"")
			}
			lname := rest[:eq]
			if !labelName.MatchString(lname) {
				return "", nil, 0, fmt.Errorf("%q is no label name", lname)
			}
			if _, dup := labels[lname]; dup {
				return "", nil, 0, fmt.Errorf("label %s twice", lname)
			}
			rest = rest[eq+2:]
			var v strings.Builder
			closed := false
			for len(rest) > 0 && !closed {
				c := rest[0]
				rest = rest[1:]
				switch c {
				case '"':
					closed = true
				case '\n':
					return "", nil, 0, errors.New("a raw newline in a label value")
				case '\\':
					if len(rest) == 0 {
						return "", nil, 0, errors.New("a label value ends in \\")
					}
					switch rest[0] {
					case '\\':
						v.WriteByte('\\')
					case '"':
						v.WriteByte('"')
					case 'n':
						v.WriteByte('\n')
					default:
						return "", nil, 0, fmt.Errorf("escape \\%c in a label value", rest[0])
					}
					rest = rest[1:]
				default:
					v.WriteByte(c)
				}
			}
			if !closed {
				return "", nil, 0, errors.New("a label value without its closing quote")
			}
			labels[lname] = v.String()
			if strings.HasPrefix(rest, ",") {
				rest = rest[1:]
			} else if !strings.HasPrefix(rest, "}") {
				return "", nil, 0, errors.New("labels not separated by a comma")
			}
		}
		rest = rest[1:]
	}
	value, ok := strings.CutPrefix(rest, " ")
	if !ok || strings.ContainsAny(value, " \t") {
		return "", nil, 0, errors.New("want one space, then the value and nothing after it")
	}
	f, err := parseValue(value)
	if err != nil {
		return "", nil, 0, err
	}
	return name, labels, f, nil
}

func parseValue(s string) (float64, error) {
	switch s {
	case "+Inf":
		return math.Inf(1), nil
	case "-Inf":
		return math.Inf(-1), nil
	case "NaN":
		return math.NaN(), nil
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsInf(f, 0) || math.IsNaN(f) {
		return 0, fmt.Errorf("value %q is no number", s)
	}
	return f, nil
}

func sortedPairs(labels map[string]string) []string {
	var pairs []string
	for k, v := range labels {
		pairs = append(pairs, k+"="+strconv.Quote(v))
	}
	slices.Sort(pairs)
	return pairs
}
