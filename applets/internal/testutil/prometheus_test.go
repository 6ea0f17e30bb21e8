package testutil

import (
	"strings"
	"testing"
)

func TestCheckExposition(t *testing.T) {
	good := `# HELP a_total Things.
# TYPE a_total counter
a_total{k="x \"q\" \\ \n"} 1
a_total{k="y"} 2
# HELP h Latency.
# TYPE h histogram
h_bucket{r="/",le="0.5"} 1
h_bucket{r="/",le="1"} 3
h_bucket{r="/",le="+Inf"} 3
h_sum{r="/"} 1.25
h_count{r="/"} 3
# TYPE g gauge
g 1.796e+09
`
	if err := CheckExposition(good); err != nil {
		t.Fatalf("valid exposition refused: %v", err)
	}
	for _, tc := range []struct{ name, text, want string }{
		{"two HELP", "# HELP a x\n# HELP a y\na 1\n", "second HELP"},
		{"two TYPE", "# TYPE a gauge\n# TYPE a gauge\na 1\n", "second TYPE"},
		{"TYPE late", "a 1\n# TYPE a gauge\n", "after its samples"},
		{"split family", "# TYPE a gauge\na 1\n# TYPE b gauge\nb 1\na{x=\"1\"} 2\n", "continues after another"},
		{"same series", "a{x=\"1\"} 1\na{x=\"1\"} 2\n", "twice"},
		{"bad escape", "a{x=\"\\t\"} 1\n", "escape"},
		{"no newline", "a 1", "no newline"},
		{"bad value", "a one\n", "no number"},
		{"not cumulative", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n", "cumulative"},
		{"no +Inf", "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_sum 1\nh_count 2\n", "+Inf"},
		{"count differs", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_sum 1\nh_count 3\n", "_count 3"},
		{"no sum", "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 2\n", "no _sum"},
	} {
		err := CheckExposition(tc.text)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
