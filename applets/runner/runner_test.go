package runner

import (
	"bytes"
	"context"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
)

func TestUsageErrors(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"runner", "extra"}, `unexpected argument "extra"`},
		{[]string{"runner", "--label", "novalue"}, `label "novalue": want key=value`},
		{[]string{"runner", "--no-such-flag"}, "no-such-flag"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			var out bytes.Buffer
			stdio := cli.IO{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out, Getenv: func(string) string { return "" }}
			err := Main(context.Background(), stdio, tt.args)
			if cli.ExitCode(err) != 2 || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("Main(%q) = %v (exit %d), want a usage error with %q", tt.args, err, cli.ExitCode(err), tt.want)
			}
		})
	}
}
