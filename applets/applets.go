// Package applets is narun's dispatcher: it picks the applet from the name
// the binary was invoked as, or from its first argument, busybox style.
package applets

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"

	"github.com/narun/narun/applets/ctl"
	"github.com/narun/narun/applets/execapp"
	"github.com/narun/narun/applets/gw"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/launcher"
	natsapplet "github.com/narun/narun/applets/nats"
	"github.com/narun/narun/applets/runner"
	"github.com/narun/narun/applets/up"
)

// Applet is one entry of the dispatch table.
type Applet struct {
	Name    string
	Aliases []string // names the binary may be linked as (see Install)
	Summary string
	Run     cli.Func
}

// Table lists the applets a user can call. It is a function, not a
// variable, because install derives its link names from it.
func Table() []Applet {
	return []Applet{
		{Name: "up", Summary: "embedded NATS, runner and gateway in one process", Run: up.Main},
		{Name: "nats", Aliases: []string{"narun-nats"}, Summary: "embedded NATS server (JetStream, cluster, leafnodes)", Run: natsapplet.Main},
		{Name: "gw", Aliases: []string{"narun-gw"}, Summary: "HTTP and gRPC gateway to NATS Micro services", Run: gw.Main},
		{Name: "runner", Aliases: []string{"node-runner"}, Summary: "node agent: deploys and supervises apps", Run: runner.Main},
		{Name: "ctl", Aliases: []string{"narun-ctl"}, Summary: "management CLI", Run: ctl.Main},
		{Name: "version", Summary: "print version, commit, Go version and platform", Run: versionMain},
		{Name: "install", Summary: "create the applet symlinks in DIR (default: beside the binary)", Run: installMain},
	}
}

// hidden entries are looked up before any flag, config or environment is
// read, and never listed: the runner re-execs the binary as these.
var hidden = map[string]cli.Func{
	"launcher": launcher.Main,
	"exec-app": execapp.Main,
}

// StdIO returns the process's own streams.
func StdIO() cli.IO {
	return cli.IO{Stdin: os.Stdin, Stdout: os.Stdout, Stderr: os.Stderr, Getenv: os.Getenv}
}

// Main runs the applet chosen by args and returns the process exit code.
func Main(args []string, stdio cli.IO) int {
	if len(args) == 0 {
		args = []string{"narun"}
	}
	if run, rest := lookupHidden(args); run != nil {
		return report(stdio.Stderr, rest[0], run(context.Background(), stdio, rest))
	}
	app, rest, ok := lookup(args)
	if !ok {
		if len(args) < 2 {
			// A link named after no applet (foo -> narun) gets the usage
			// with the name it was called by; narun itself, or a
			// versioned narun-1.2, just the usage.
			if name := filepath.Base(args[0]); !strings.HasPrefix(name, "narun") {
				fmt.Fprintf(stdio.Stderr, "narun: unknown applet %q: name a link after an applet, or give the applet as the first argument\n\n", name)
			}
			usage(stdio.Stderr)
			return 2
		}
		switch args[1] {
		case "-h", "--help", "help":
			if len(args) > 2 {
				// narun help gw (ctl deploy) is narun gw (ctl deploy) --help.
				a, ok := byName(args[2])
				if !ok {
					fmt.Fprintf(stdio.Stderr, "narun: unknown applet %q\n\n", args[2])
					usage(stdio.Stderr)
					return 2
				}
				return Main(append(append([]string{args[0], a.Name}, args[3:]...), "--help"), stdio)
			}
			usage(stdio.Stdout)
			return 0
		case "--version", "-version", "-v":
			// What an operator types first to learn what runs on a
			// device; pointing at an applet would send them nowhere.
			return report(stdio.Stderr, "narun version", versionMain(context.Background(), stdio, []string{"narun version"}))
		}
		if strings.HasPrefix(args[1], "-") {
			// `narun --config FILE up` is a natural guess: every flag,
			// --config included, belongs to an applet.
			fmt.Fprintf(stdio.Stderr, "narun: %s before the applet: flags follow it (narun APPLET %s ...)\n\n", args[1], args[1])
		} else {
			fmt.Fprintf(stdio.Stderr, "narun: unknown applet %q\n\n", args[1])
		}
		usage(stdio.Stderr)
		return 2
	}
	if len(rest) == 2 && rest[1] == "--version" {
		// No applet has a flag of that name: the one version is narun's.
		return report(stdio.Stderr, rest[0], versionMain(context.Background(), stdio, []string{rest[0]}))
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return report(stdio.Stderr, rest[0], app.Run(ctx, stdio, rest))
}

func report(stderr io.Writer, name string, err error) int {
	code := cli.ExitCode(err)
	if err != nil && err.Error() != "" && !cli.IsLogged(err) {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
	}
	return code
}

func lookupHidden(args []string) (cli.Func, []string) {
	name := invokedName(args[0])
	if run, ok := hidden[name]; ok {
		return run, args
	}
	// Invoked as an applet, its first argument is the applet's own:
	// narun-ctl launcher is ctl's to refuse.
	if len(args) > 1 && !isApplet(name) {
		if run, ok := hidden[args[1]]; ok {
			return run, args[1:]
		}
	}
	return nil, nil
}

// lookup finds the applet by the invoked name, then by the first argument.
// The arguments it returns start with the command as the user typed it
// ("narun-ctl", "narun ctl"), which help texts and error messages show.
func lookup(args []string) (Applet, []string, bool) {
	if a, ok := byName(invokedName(args[0])); ok {
		return a, append([]string{filepath.Base(args[0])}, args[1:]...), true
	}
	if len(args) > 1 {
		if a, ok := byName(args[1]); ok {
			return a, append([]string{filepath.Base(args[0]) + " " + args[1]}, args[2:]...), true
		}
	}
	return Applet{}, nil, false
}

func byName(name string) (Applet, bool) {
	for _, a := range Table() {
		if a.Name == name {
			return a, true
		}
		for _, alias := range a.Aliases {
			if alias == name {
				return a, true
			}
		}
	}
	return Applet{}, false
}

// invokedName is the base name of argv[0], or of a link it leads to: the
// last name along the chain of symlinks that names an applet. So a link to
// a link to narun-gw still runs gw, and narun-gw -> narun still runs gw
// when narun is itself a link to a versioned binary (narun-1.2), as an
// install that swaps versions by moving one link has it.
func invokedName(argv0 string) string {
	name := filepath.Base(argv0)
	applet := ""
	if isApplet(name) {
		applet = name
	}
	path := argv0
	if !strings.Contains(path, "/") {
		p, err := exec.LookPath(path)
		if err != nil {
			// A bare name is no path: read as one, it would be a link of
			// that name in the working directory, an app's directory for
			// the "narun exec-app" the runner starts.
			return cmp.Or(applet, name)
		}
		path = p
	}
	for range 16 {
		target, err := os.Readlink(path)
		if err != nil {
			break
		}
		name = filepath.Base(path)
		if isApplet(name) {
			applet = name
		}
		if !filepath.IsAbs(target) {
			// The link's directory as the kernel reaches it: Join and
			// Dir clean ".." as text, which names another directory when
			// the path came through a symlinked one.
			target = path[:strings.LastIndexByte(path, '/')+1] + target
		}
		path = target
	}
	return cmp.Or(applet, name)
}

func isApplet(name string) bool {
	_, ok := byName(name)
	return ok || hidden[name] != nil
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "narun: one binary to run and expose services on edge devices")
	fmt.Fprintln(w, "\nusage: narun APPLET [flags]   (or invoke a link named after the applet)")
	fmt.Fprintln(w, "\napplets:")
	entries := Table()
	sort.Slice(entries, func(i, j int) bool { return entries[i].Name < entries[j].Name })
	for _, a := range entries {
		names := a.Name
		if len(a.Aliases) > 0 {
			names += " (" + strings.Join(a.Aliases, ", ") + ")"
		}
		fmt.Fprintf(w, "  %-28s %s\n", names, a.Summary)
	}
	fmt.Fprintln(w, "\nrun 'narun APPLET --help' for an applet's flags")
}
