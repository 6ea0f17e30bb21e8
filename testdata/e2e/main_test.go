// Package e2e runs narun on several test hosts made of network namespaces.
// It needs root and the ip tool; scripts/e2e.sh builds narun and runs it.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"testing"
)

func TestMain(m *testing.M) {
	if os.Geteuid() != 0 {
		fmt.Println("e2e: skipped: needs root to create network namespaces")
		os.Exit(0)
	}
	if _, err := exec.LookPath("ip"); err != nil {
		fmt.Println("e2e: the ip tool (iproute2) is required")
		os.Exit(1)
	}
	cleanupLeftovers()
	code := m.Run()
	if helloDir != "" {
		os.RemoveAll(helloDir)
	}
	if p := os.Getenv("NARUN_E2E_REPORT"); p != "" {
		if err := writeReport(p); err != nil {
			fmt.Println("e2e: write report:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func narunBinary(t *testing.T) string {
	t.Helper()
	p := os.Getenv("NARUN_E2E_BINARY")
	if p == "" {
		t.Fatal("NARUN_E2E_BINARY is not set; run scripts/e2e.sh")
	}
	return p
}
