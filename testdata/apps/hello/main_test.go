package main

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The test binary runs main when this variable is set, so a test can run
// the command itself.
const asHello = "HELLO_TEST_AS_HELLO"

func TestMain(m *testing.M) {
	if os.Getenv(asHello) == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestHelpNamesTheNATSServerVariable: -help must say how the consumer picks
// its NATS server (NARUN_NATS_URL), which no flag shows.
func TestHelpNamesTheNATSServerVariable(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-help")
	cmd.Env = append(os.Environ(), asHello+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("hello -help: %v\n%s", err, out)
	}
	for _, want := range []string{"NARUN_NATS_URL", "nats://127.0.0.1:4222", "NARUN_NATS_CREDS", "NARUN_NATS_NKEY", "-http", "-service"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("help does not mention %s:\n%s", want, out)
		}
	}
}
