// Package elfarch tells which Linux architecture an executable is built
// for, from its ELF header, so ctl never uploads a binary that no node can
// run under the wrong arch.
package elfarch

import (
	"bytes"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"unicode"
	"unicode/utf8"
)

// ErrUnsupported means the file is not a Linux executable for amd64, arm64
// or riscv64.
var ErrUnsupported = errors.New("unsupported binary")

// Detect returns "amd64", "arm64" or "riscv64" for a Linux ELF executable
// read from r, whose size is size. Anything else is an error wrapping
// ErrUnsupported that says what the file is.
func Detect(r io.ReaderAt, size int64) (string, error) {
	var magic [4]byte
	if _, err := r.ReadAt(magic[:], 0); err != nil || string(magic[:]) != elf.ELFMAG {
		if interp, ok := shebang(r); ok {
			return "", fmt.Errorf("%w: not an ELF file but a script for %s: deploy the interpreter as --binary, the script as a [[files]] object, and name it in args (docs/SPEC.md, \"Scripts\")", ErrUnsupported, interp)
		}
		return "", fmt.Errorf("%w: not an ELF file (build with GOOS=linux)", ErrUnsupported)
	}
	f, err := elf.NewFile(r)
	if err != nil {
		return "", fmt.Errorf("%w: malformed ELF header: %v", ErrUnsupported, err)
	}
	if f.Type != elf.ET_EXEC && f.Type != elf.ET_DYN {
		return "", fmt.Errorf("%w: ELF type %s is not an executable", ErrUnsupported, f.Type)
	}
	// Go and most toolchains leave OSABI at SYSV (0) for Linux; GNU marks
	// some binaries as Linux. Every other OS ABI is refused.
	if f.OSABI != elf.ELFOSABI_NONE && f.OSABI != elf.ELFOSABI_LINUX {
		return "", fmt.Errorf("%w: built for OS ABI %s, not Linux", ErrUnsupported, f.OSABI)
	}
	arch := ""
	switch {
	case f.Machine == elf.EM_X86_64 && f.Class == elf.ELFCLASS64:
		arch = "amd64"
	case f.Machine == elf.EM_AARCH64 && f.Class == elf.ELFCLASS64:
		arch = "arm64"
	case f.Machine == elf.EM_RISCV && f.Class == elf.ELFCLASS64:
		arch = "riscv64"
	default:
		return "", fmt.Errorf("%w: machine %s (%s) is not amd64, arm64 or riscv64", ErrUnsupported, f.Machine, f.Class)
	}
	// A truncated upload passes the header check; the program headers and
	// every loadable segment must lie inside the file.
	if len(f.Progs) == 0 {
		return "", fmt.Errorf("%w: ELF file has no program headers", ErrUnsupported)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && int64(p.Off+p.Filesz) > size {
			return "", fmt.Errorf("%w: truncated: segment ends at %d, file has %d bytes", ErrUnsupported, p.Off+p.Filesz, size)
		}
	}
	if err := osNote(f); err != nil {
		return "", err
	}
	return arch, nil
}

// shebang returns the interpreter a "#!" line names ("/usr/bin/env
// python3"): a runner executes only ELF binaries, so the script's author
// needs to hear what to deploy instead, not to rebuild it.
func shebang(r io.ReaderAt) (string, bool) {
	var b [128]byte
	n, _ := r.ReadAt(b[:], 0)
	line, ok := bytes.CutPrefix(b[:n], []byte("#!"))
	if !ok {
		return "", false
	}
	if i := bytes.IndexByte(line, '\n'); i >= 0 {
		line = line[:i]
	}
	interp := strings.TrimSpace(string(line))
	// The line goes to a terminal: only a printable one is quoted back.
	if interp == "" || !utf8.ValidString(interp) || strings.IndexFunc(interp, func(c rune) bool { return !unicode.IsPrint(c) }) >= 0 {
		return "an interpreter", true
	}
	return interp, true
}

// foreignNotes are note owners that mark an executable for another OS;
// Go and other toolchains for the BSDs leave OSABI at SYSV but add one.
var foreignNotes = map[string]bool{"FreeBSD": true, "NetBSD": true, "OpenBSD": true, "DragonFly": true, "SUNW Solaris": true}

// osNote refuses binaries whose notes say they are for another OS.
func osNote(f *elf.File) error {
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOTE {
			continue
		}
		data, err := s.Data()
		if err != nil {
			continue
		}
		for len(data) >= 12 {
			namesz := int(f.ByteOrder.Uint32(data[0:4]))
			descsz := int(f.ByteOrder.Uint32(data[4:8]))
			typ := f.ByteOrder.Uint32(data[8:12])
			nameEnd := 12 + namesz
			descEnd := 12 + align4(namesz) + descsz
			if namesz < 1 || nameEnd > len(data) || descEnd > len(data) || descsz < 0 {
				break
			}
			name := string(data[12 : nameEnd-1])
			if foreignNotes[name] {
				return fmt.Errorf("%w: built for %s, not Linux", ErrUnsupported, name)
			}
			// NT_GNU_ABI_TAG: the first word is the OS, 0 for Linux.
			if name == "GNU" && typ == 1 && descsz >= 4 {
				if osw := f.ByteOrder.Uint32(data[12+align4(namesz):]); osw != 0 {
					return fmt.Errorf("%w: GNU ABI tag names OS %d, not Linux", ErrUnsupported, osw)
				}
			}
			data = data[min(align4(descEnd), len(data)):]
		}
	}
	return nil
}

func align4(n int) int { return (n + 3) &^ 3 }

// DetectFile opens path and calls Detect.
func DetectFile(path string) (string, error) {
	// Checked before opening: opening a named pipe waits for a writer,
	// and a caller that digests and uploads the file reads it to its end,
	// which a device such as /dev/zero never reaches.
	st, err := os.Stat(path)
	if err != nil {
		return "", err
	}
	switch {
	case st.IsDir():
		// Often a Go package directory given where its build was meant.
		return "", fmt.Errorf("%s: %w: is a directory, not an executable", path, ErrUnsupported)
	case !st.Mode().IsRegular():
		return "", fmt.Errorf("%s: %w: %s, not a regular file", path, ErrUnsupported, FileType(st.Mode()))
	}
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	arch, err := Detect(f, st.Size())
	if err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return arch, nil
}

// FileType names the type of a file that is not a regular one, for
// errors that refuse it.
func FileType(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&os.ModeNamedPipe != 0:
		return "a named pipe"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeCharDevice != 0:
		return "a character device"
	case m&os.ModeDevice != 0:
		return "a block device"
	}
	return "a special file"
}
