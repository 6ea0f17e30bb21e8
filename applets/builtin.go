package applets

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/cli"
)

// versionFlags are the flags of version, and where --json lands.
func versionFlags() (*flag.FlagSet, *bool) {
	fl := flag.NewFlagSet("version", flag.ContinueOnError)
	return fl, fl.Bool("json", false, "print as JSON")
}

// installFlags are the flags of install: none but -h.
func installFlags() *flag.FlagSet { return flag.NewFlagSet("install", flag.ContinueOnError) }

func versionMain(_ context.Context, stdio cli.IO, args []string) error {
	fl, asJSON := versionFlags()
	usage := fmt.Sprintf("usage: %s [--json]\n\nprints narun's version, commit, Go version and platform\n\n", args[0])
	if done, err := parseFlags(fl, stdio, args, usage); done || err != nil {
		return err
	}
	if fl.NArg() > 0 {
		return cli.Usage(fmt.Errorf("version takes no arguments, got %d", fl.NArg()))
	}
	info := buildinfo.Get()
	if *asJSON {
		return json.NewEncoder(stdio.Stdout).Encode(info)
	}
	_, err := fmt.Fprintln(stdio.Stdout, info)
	return err
}

// parseFlags parses the flags of an applet without urfave/cli. The usage
// goes to stdout when asked for (done, exit 0), as the other applets print
// their help, and to stderr after a wrong flag (a usage error).
func parseFlags(fl *flag.FlagSet, stdio cli.IO, args []string, usage string) (done bool, err error) {
	var msg bytes.Buffer
	fl.SetOutput(&msg)
	fl.Usage = func() {
		msg.WriteString(usage)
		fl.PrintDefaults()
	}
	err = fl.Parse(args[1:])
	if errors.Is(err, flag.ErrHelp) {
		_, err = msg.WriteTo(stdio.Stdout)
		return true, err
	}
	if err != nil {
		msg.WriteTo(stdio.Stderr)
		return true, cli.Usage(errors.New(""))
	}
	return false, nil
}

// linkNames are the names Install creates: every alias in the table.
func linkNames() []string {
	var names []string
	for _, a := range Table() {
		names = append(names, a.Aliases...)
	}
	return names
}

func installMain(_ context.Context, stdio cli.IO, args []string) error {
	fl := installFlags()
	usage := fmt.Sprintf("usage: narun install [DIR]\n\ncreates the links %v to this binary in DIR (default: the directory of the binary as invoked, symlinks not followed)\n", linkNames())
	if done, err := parseFlags(fl, stdio, args, usage); done || err != nil {
		return err
	}
	if fl.NArg() > 1 {
		quoted := make([]string, fl.NArg())
		for i, dir := range fl.Args() {
			quoted[i] = strconv.Quote(dir)
		}
		return cli.Usage(fmt.Errorf("at most one directory, got %d: %s", fl.NArg(), strings.Join(quoted, " ")))
	}
	// "" would be the working directory to some calls and no directory
	// to others: most likely an unset variable.
	if fl.NArg() == 1 && fl.Arg(0) == "" {
		return cli.Usage(errors.New("empty directory name: give DIR, or none for the binary's directory"))
	}
	self, err := installTarget(os.Args[0])
	if err != nil {
		return err
	}
	dir := filepath.Dir(self)
	if fl.NArg() == 1 {
		dir = fl.Arg(0)
	}
	created, err := Install(self, dir)
	printLinks(stdio, self, created, "")
	if err != nil {
		return err
	}
	// Every other link was already in place: an operator checking a
	// device gets a confirmation of each, not silence.
	var kept []string
	for _, name := range linkNames() {
		if p := filepath.Join(dir, name); !slices.Contains(created, p) {
			kept = append(kept, p)
		}
	}
	printLinks(stdio, self, kept, " (already there)")
	return nil
}

// printLinks prints each link with what it holds, which Install makes
// relative beside the binary: ls -l shows the same.
func printLinks(stdio cli.IO, self string, links []string, note string) {
	for _, p := range links {
		target, err := os.Readlink(p)
		if err != nil {
			target = self
		}
		fmt.Fprintf(stdio.Stdout, "%s -> %s%s\n", p, target, note)
	}
}

// installTarget is what the links point to: the binary as it was invoked
// when that path leads to the running binary through symlinks, so that
// links beside /usr/local/bin/narun -> narun-1.2 follow narun when an
// upgrade moves it to narun-1.3; otherwise the running binary itself.
func installTarget(argv0 string) (string, error) {
	self, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("find own binary: %w", err)
	}
	if self, err = filepath.EvalSymlinks(self); err != nil {
		return "", fmt.Errorf("resolve own binary: %w", err)
	}
	invoked := argv0
	if !strings.Contains(invoked, "/") {
		if invoked, err = exec.LookPath(invoked); err != nil {
			return self, nil
		}
	}
	invoked, err = filepath.Abs(invoked)
	if err != nil {
		return self, nil
	}
	a, errA := os.Stat(invoked)
	b, errB := os.Stat(self)
	if errA != nil || errB != nil || !os.SameFile(a, b) {
		return self, nil
	}
	return invoked, nil
}

// Install makes each applet alias in dir a symlink to binary. It is
// idempotent, replaces symlinks that point elsewhere, and refuses to touch
// anything that is not a symlink: it looks at every name first and, with
// any such file in the way, makes no link at all and names each one, so
// that an install is never left half done. For the same reason a link
// that fails once others are made (a full disk) undoes them: those it
// created are removed, those it replaced point where they did. It
// returns the links it created and left in place.
func Install(binary, dir string) ([]string, error) {
	if fi, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("directory %q does not exist", dir)
	} else if err != nil {
		return nil, fmt.Errorf("check directory %q: %w", dir, err)
	} else if !fi.IsDir() {
		return nil, fmt.Errorf("%q is not a directory", dir)
	}
	target := binary
	if absDir, err := filepath.Abs(dir); err == nil && absDir == filepath.Dir(binary) {
		target = filepath.Base(binary)
	}
	var todo []string
	var obstacles []error
	// was holds the target of each symlink to replace, for an undo to
	// put back.
	was := map[string]string{}
	for _, name := range linkNames() {
		link := filepath.Join(dir, name)
		fi, err := os.Lstat(link)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			obstacles = append(obstacles, fmt.Errorf("install %s: %w", link, err))
			continue
		case fi.Mode()&fs.ModeSymlink == 0:
			obstacles = append(obstacles, fmt.Errorf("install %s: a file that is not a symlink is in the way; remove it first", link))
			continue
		default:
			cur, err := os.Readlink(link)
			if err != nil {
				obstacles = append(obstacles, fmt.Errorf("install %s: %w", link, err))
				continue
			}
			if cur == target {
				continue
			}
			was[link] = cur
		}
		todo = append(todo, link)
	}
	if len(obstacles) > 0 {
		return nil, fmt.Errorf("%w\nno link made", errors.Join(obstacles...))
	}
	var created []string
	for _, link := range todo {
		if err := putLink(target, link); err != nil {
			err = fmt.Errorf("install %s: %w", link, err)
			if len(created) == 0 {
				return nil, err
			}
			left, undoErr := undoLinks(created, was)
			if undoErr != nil {
				return left, errors.Join(err, undoErr)
			}
			return nil, fmt.Errorf("%w\nthe links made before it were undone", err)
		}
		created = append(created, link)
	}
	return created, nil
}

// putLink makes link a symlink to target in one step, whatever link was.
func putLink(target, link string) error {
	tmp, err := symlinkAside(target, link)
	if err != nil {
		return err
	}
	if err := os.Rename(tmp, link); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// undoLinks removes the links of created, last first, or points those
// was has a target for back to it, and returns the ones it could not
// undo.
func undoLinks(created []string, was map[string]string) ([]string, error) {
	var left []string
	var errs []error
	for _, link := range slices.Backward(created) {
		var err error
		if old, ok := was[link]; ok {
			err = putLink(old, link)
		} else {
			err = os.Remove(link)
		}
		if err != nil {
			left = append(left, link)
			errs = append(errs, fmt.Errorf("undo %s: %w", link, err))
		}
	}
	return left, errors.Join(errs...)
}

// symlinkAside creates a symlink to target under a new name beside link,
// for a rename to put in place in one step. The name has a random suffix
// and is taken only if free (symlink(2) fails on an existing name), as
// os.CreateTemp does for files, so no file of the user's is ever replaced
// or removed.
func symlinkAside(target, link string) (string, error) {
	for range 10000 {
		tmp := link + ".narun-tmp-" + strconv.FormatUint(uint64(rand.Uint32()), 10)
		err := os.Symlink(target, tmp)
		if err == nil {
			return tmp, nil
		}
		if !errors.Is(err, fs.ErrExist) {
			return "", err
		}
	}
	return "", fmt.Errorf("create a temporary link beside %s: every name tried exists", link)
}
