package ctl

import (
	"debug/elf"
	"encoding/binary"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// elfBinaryOf is elfBinary with the ELF header's machine set to that of
// arch, which no node in these tests runs.
func elfBinaryOf(t *testing.T, arch string) string {
	t.Helper()
	machine := map[string]elf.Machine{"amd64": elf.EM_X86_64, "arm64": elf.EM_AARCH64, "riscv64": elf.EM_RISCV}[arch]
	b, err := os.ReadFile(elfBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	binary.LittleEndian.PutUint16(b[18:], uint16(machine))
	p := filepath.Join(t.TempDir(), "app-"+arch)
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// A deploy with --binary pins those binaries and no others: one that
// leaves out an arch the deployed spec has drops it, and nodes of that
// arch fail its instances. A node of it that sends no heartbeat now (a
// device that is off) was not warned of, and the operator learnt it when
// the device came back. The deploy names the arch it drops.
func TestDeployWarnsOfDroppedArch(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	other := "riscv64"
	if runtime.GOARCH == other {
		other = "arm64"
	}
	p := h.file("hello.toml", helloSpec)
	h.ok("", "deploy", p, "--binary", elfBinary(t), "--binary", elfBinaryOf(t, other))
	want := "warning: the deployed spec of hello has a binary for " + other + " and this deploy none"
	for _, args := range [][]string{{"deploy", p, "--binary", elfBinary(t), "--dry-run"}, {"deploy", p, "--binary", elfBinary(t)}} {
		if r := h.ok("", args...); !strings.Contains(r.err, want) {
			t.Errorf("%v: stderr %q, want %q", args, r.err, want)
		}
	}
	// Dropped once, it is not warned of again.
	if r := h.ok("", "deploy", p, "--binary", elfBinary(t)); strings.Contains(r.err, other) {
		t.Errorf("stderr of a deploy with the same arches: %q", r.err)
	}
}

// An unusable --binary is named with the flag, as a spec's problem is
// with its file, line and key: "stat x: no such file or directory" alone
// did not say which argument it was.
func TestBadBinaryNamesTheFlag(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	p := h.file("hello.toml", helloSpec)
	missing := filepath.Join(h.dir, "web-amd64")
	script := h.file("run.sh", "#!/bin/sh\n")
	for _, tc := range []struct{ bin, want string }{
		{missing, "--binary " + missing + ": no such file or directory"},
		{script, "--binary " + script + ": unsupported binary: not an ELF file"},
		{h.dir, "--binary " + h.dir + ": unsupported binary: is a directory"},
	} {
		for _, args := range [][]string{{"deploy", p, "--binary", tc.bin}, {"deploy", p, "--binary", tc.bin, "--dry-run"}} {
			if r := h.fails(1, "", args...); !strings.Contains(r.err, tc.want) {
				t.Errorf("%v: %s, want %q", args, r.err, tc.want)
			}
		}
	}
}
