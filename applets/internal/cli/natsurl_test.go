package cli_test

import (
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/narun/narun/applets/internal/cli"
)

func TestRedactErrorKeepsTheError(t *testing.T) {
	err := cli.RedactError(fmt.Errorf("dial nats://edge:pw@host: %w", io.EOF))
	if got, want := err.Error(), "dial nats://edge:xxxxx@host: EOF"; got != want {
		t.Errorf("message %q, want %q", got, want)
	}
	if !errors.Is(err, io.EOF) {
		t.Errorf("%v does not wrap io.EOF", err)
	}
}
