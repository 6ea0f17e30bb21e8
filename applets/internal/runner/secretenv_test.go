package runner

import (
	"os"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/state"
)

// An env secret whose value no environment variable can carry (a NUL byte,
// a string past the kernel's MAX_ARG_STRLEN) fails its instance at once,
// naming the secret and the way out, instead of restarts that can never
// succeed.
func TestSecretUnfitForEnvFailsAtOnce(t *testing.T) {
	t.Parallel()
	c := newCluster(t, nil)
	cases := []struct{ app, secret, value, want string }{
		{"nul", "withnul", "before\x00after", `secret "withnul": its value holds a NUL byte`},
		{"big", "large", strings.Repeat("x", 200<<10), `secret "large": its value is 204800 bytes, more than an environment variable can carry`},
	}
	values := map[string]string{}
	for _, tc := range cases {
		values[tc.secret] = tc.value
	}
	keyFile := writeKeyFile(t, sealSecrets(t, c, values))
	tr := startRunner(t, c, func(o *Options) { o.Config.MasterKeyFile = keyFile })
	for _, tc := range cases {
		c.deploy(t, tc.app, "1.0.0", probeBin, "[[secrets]]\nname = \""+tc.secret+"\"\nenv = \"TOKEN\"\n")
	}
	for _, tc := range cases {
		in := tr.wait(t, tc.app, "failed", allIn(1, state.Failed))[0]
		if !strings.Contains(in.Reason, tc.want) || !strings.Contains(in.Reason, "give it as a file") || in.Restarts != 0 {
			t.Errorf("instance %+v: want failed at once with reason %q", in, tc.want)
		}
	}
}

// The limit is the kernel's, 32 pages of this machine's size, not of
// 4 KiB: on a kernel with 64 KiB pages a value of 200 KiB fits.
func TestEnvFitLimitIsThirtyTwoPages(t *testing.T) {
	t.Parallel()
	limit := 32 * os.Getpagesize()
	fits := []byte(strings.Repeat("x", limit-len("TOKEN=")-1))
	if err := envFit("TOKEN", fits); err != nil {
		t.Errorf("value of %d bytes, with its name and NUL the %d of 32 pages: %v", len(fits), limit, err)
	}
	if err := envFit("TOKEN", append(fits, 'x')); err == nil {
		t.Errorf("value of %d bytes, one past 32 pages with its name and NUL, accepted", len(fits)+1)
	}
}
