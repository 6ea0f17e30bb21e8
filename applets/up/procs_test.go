package up

import "testing"

func TestShareCores(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ procs, want int }{
		{1, 1}, {2, 1}, {3, 2}, {4, 2}, {8, 4}, {64, 32},
	} {
		if got := shareCores(tc.procs); got != tc.want {
			t.Errorf("shareCores(%d) = %d, want %d", tc.procs, got, tc.want)
		}
	}
}
