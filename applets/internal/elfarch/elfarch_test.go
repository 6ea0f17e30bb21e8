package elfarch

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// build compiles a do-nothing program for goos/goarch into dir.
func build(t *testing.T, dir, goos, goarch string) string {
	t.Helper()
	src := filepath.Join(dir, "main.go")
	if _, err := os.Stat(src); err != nil {
		if err := os.WriteFile(src, []byte("package main\n\nfunc main() {}\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module tiny\n\ngo 1.21\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	out := filepath.Join(dir, goos+"-"+goarch)
	cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", out, ".")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOOS="+goos, "GOARCH="+goarch, "CGO_ENABLED=0", "GOFLAGS=")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s/%s: %v\n%s", goos, goarch, err, b)
	}
	return out
}

func TestDetect(t *testing.T) {
	if testing.Short() {
		t.Skip("cross-compiles several binaries")
	}
	dir := t.TempDir()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		goos, goarch string
		path         string
		want         string // "" = refused
	}{
		{goos: "linux", goarch: "arm64", want: "arm64"},
		{goos: "linux", goarch: "riscv64", want: "riscv64"},
		{goos: "linux", goarch: "amd64", want: "amd64"},
		{goos: "linux", goarch: "386"},
		{goos: "linux", goarch: "arm"},
		{goos: "freebsd", goarch: "amd64"},
		{goos: "openbsd", goarch: "arm64"},
		{goos: "netbsd", goarch: "amd64"},
		{goos: "windows", goarch: "amd64"},
		{goos: "darwin", goarch: "arm64"},
		{goos: "self", path: self, want: runtime.GOARCH},
	}
	for _, tc := range tests {
		t.Run(tc.goos+"/"+tc.goarch, func(t *testing.T) {
			p := tc.path
			if p == "" {
				p = build(t, dir, tc.goos, tc.goarch)
			}
			got, err := DetectFile(p)
			if tc.want == "" {
				if !errors.Is(err, ErrUnsupported) {
					t.Fatalf("got %q, %v; want ErrUnsupported", got, err)
				}
				t.Log(err)
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestDetectRefusesBrokenFiles(t *testing.T) {
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	whole, err := os.ReadFile(self)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"script", []byte("#!/bin/sh\necho hi\n")},
		{"magic only", []byte("\x7fELF")},
		{"header only", whole[:64]},
		{"truncated", whole[:len(whole)/2]},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Detect(bytes.NewReader(tc.data), int64(len(tc.data)))
			if !errors.Is(err, ErrUnsupported) {
				t.Fatalf("accepted: %v", err)
			}
		})
	}
}

func FuzzDetect(f *testing.F) {
	if self, err := os.Executable(); err == nil {
		if b, err := os.ReadFile(self); err == nil {
			f.Add(b[:4096])
		}
	}
	f.Add([]byte("\x7fELF\x02\x01\x01\x00"))
	f.Fuzz(func(t *testing.T, data []byte) {
		arch, err := Detect(bytes.NewReader(data), int64(len(data)))
		if err == nil && arch == "" {
			t.Fatal("no error and no arch")
		}
	})
}
