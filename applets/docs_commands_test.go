package applets

import (
	"flag"
	"fmt"
	"maps"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/ctl"
	"github.com/narun/narun/applets/gw"
	"github.com/narun/narun/applets/internal/testutil"
	natsapplet "github.com/narun/narun/applets/nats"
	"github.com/narun/narun/applets/runner"
	"github.com/narun/narun/applets/up"
)

// docCommand is a narun command line the docs show.
type docCommand struct {
	where string // "docs/SPEC.md:705"
	words []string
}

// shellBlocks are the languages of fenced blocks whose lines are typed
// at a shell, with their output: a line is a command when a narun word
// starts it or one of its pipeline's parts.
var shellBlocks = []string{"", "sh", "bash", "shell", "console", "text"}

// unitCommand is a line of a systemd unit that runs a command.
var unitCommand = regexp.MustCompile(`^Exec[A-Za-z]*=[-@:+!]*(.*)$`)

// separators split a shell line into the commands it runs. A pipe has
// spaces around it: one without is a synopsis's alternatives
// (--log-format text|json).
var separators = regexp.MustCompile(`\s(\|\||&&|\|)\s|;|\$\(|<\(|\)`)

// docCommands are the narun command lines of README.md and docs/*.md:
// lines of shell blocks, Exec lines of unit files, and inline code spans,
// each of which a narun word (narun, an applet link, a path to either)
// starts, or starts one part of (`printf x | narun ctl secret set db`,
// `source <(narun ctl completion bash)`). The first column of the
// command table of SPEC.md's "narun ctl" section holds ctl commands
// without their "narun ctl".
func docCommands(tb testing.TB) []docCommand {
	tb.Helper()
	var cmds []docCommand
	add := func(file string, line int, text string) {
		for _, words := range narunCommands(text) {
			cmds = append(cmds, docCommand{where: fmt.Sprintf("%s:%d", file, line), words: words})
		}
	}
	for _, b := range testutil.DocFences(tb) {
		lines := strings.Split(b.Text, "\n")
		for i := 0; i < len(lines); i++ {
			n := b.Line + 1 + i
			line := strings.TrimSpace(lines[i])
			// A backslash at the end continues the command, and so
			// does an indented line a synopsis wraps to.
			for i+1 < len(lines) && (strings.HasSuffix(line, `\`) || strings.HasPrefix(line, "narun") && strings.HasPrefix(lines[i+1], " ")) {
				i++
				line = strings.TrimSuffix(line, `\`) + " " + strings.TrimSpace(lines[i])
			}
			switch {
			case b.Lang == "ini":
				if m := unitCommand.FindStringSubmatch(line); m != nil {
					add(b.File, n, m[1])
				}
			case slices.Contains(shellBlocks, b.Lang):
				// A prompt: "$ " a user's, "# " root's.
				line = strings.TrimPrefix(strings.TrimPrefix(line, "$ "), "# ")
				add(b.File, n, line)
			}
		}
	}
	for _, s := range testutil.DocSpans(tb) {
		if s.Section == "narun ctl" && slices.Contains(firstCell(s.Source), s.Text) {
			add(s.File, s.Line, "narun ctl "+s.Text)
			continue
		}
		add(s.File, s.Line, s.Text)
	}
	return cmds
}

// firstCell returns the code spans of a table row's first cell, such as
// "| `image list [--json]` / `image delete OBJECT...` | ...": those
// whose text the cell holds, alone or joined by slashes.
func firstCell(row string) []string {
	rest, ok := strings.CutPrefix(row, "| ")
	var spans []string
	for ok {
		if !strings.HasPrefix(rest, "`") {
			break
		}
		span, after, closed := strings.Cut(rest[1:], "`")
		if !closed {
			break
		}
		spans = append(spans, span)
		rest, ok = strings.CutPrefix(after, " / ")
	}
	return spans
}

// narunCommands are the words of each narun command of a shell line, up
// to its comment, with the words before narun (sudo, variables) dropped.
// What is not a command, though it starts with a narun word, is told by
// its shape: a message ("narun ctl: ...", "narun-gw: ..."), a link as
// ls -l shows it ("narun-gw -> narun").
func narunCommands(line string) [][]string {
	if i := strings.Index(line, " #"); i >= 0 {
		line = line[:i]
	}
	if strings.Contains(line, " -> ") {
		return nil
	}
	var cmds [][]string
	for _, part := range separators.Split(line, -1) {
		words := strings.Fields(part)
		for len(words) > 0 && (words[0] == "sudo" || strings.Contains(words[0], "=") && !strings.HasPrefix(words[0], "-")) {
			words = words[1:]
		}
		// The quick start runs the checkout: go run . is narun.
		if len(words) > 2 && words[0] == "go" && words[1] == "run" && words[2] == "." {
			words = append([]string{"narun"}, words[3:]...)
		}
		if len(words) == 0 || !isNarun(words) {
			continue
		}
		if slices.ContainsFunc(words[:min(2, len(words))], func(w string) bool { return strings.HasSuffix(w, ":") }) {
			continue
		}
		cmds = append(cmds, words)
	}
	return cmds
}

// isNarun tells a command line that runs narun: its first word is narun
// or a link named after an applet, or a path to either that an applet
// follows (/usr/local/bin/narun up, not /var/lib/narun).
func isNarun(words []string) bool {
	is := func(name string) bool { return name == "narun" || slices.Contains(linkNames(), name) }
	if !strings.Contains(words[0], "/") {
		return is(words[0])
	}
	if !is(filepath.Base(words[0])) || len(words) < 2 {
		return false
	}
	_, applet := byName(words[1])
	return applet || filepath.Base(words[0]) != "narun"
}

// placeholder tells an argument the docs leave to the reader (NAME,
// APP.toml, <app>, FILE..., ...) from a word that must be a command.
// A word with <TAB> is what a reader types before completing it.
var placeholder = regexp.MustCompile(`^(\.\.\.|…|<.*>.*|.*<TAB>|[A-Z][A-Z0-9_]*(\.[a-z]+)?(\.\.\.)?)$`)

// docWord is a word of a synopsis as a shell would pass it: the brackets
// and braces of "[--wait]" and "{a,b}" are notation.
func docWord(w string) string {
	return strings.TrimRight(strings.TrimLeft(w, "[({"), "])},")
}

// checkCommand checks words, a command line starting with a narun word,
// against the applets' real flags and commands; the error names what is
// wrong with it.
func checkCommand(words []string) error {
	name := filepath.Base(words[0])
	args := words[1:]
	path := name
	a, ok := byName(name)
	if !ok {
		if len(args) == 0 {
			return nil
		}
		first := docWord(args[0])
		switch {
		case slices.Contains([]string{"-h", "--help", "help", "--version", "-version", "-v"}, first):
			return nil
		case placeholder.MatchString(first):
			return nil
		case hidden[first] != nil:
			// The docs name a re-exec entry as ps shows it (`narun
			// launcher resolver-keeper`): its arguments are the
			// runner's to give, not a user's.
			return nil
		}
		if a, ok = byName(first); !ok {
			return fmt.Errorf("narun: no applet %q", first)
		}
		path = name + " " + first
		args = args[1:]
	}
	switch a.Name {
	case "version":
		fl, _ := versionFlags()
		return checkStdFlags(path, fl, args, false)
	case "install":
		return checkStdFlags(path, installFlags(), args, true)
	case "ctl":
		return checkUrfave(path, ctl.App(path), args)
	}
	flags := map[string]func() []ucli.Flag{"gw": gw.Flags, "runner": runner.Flags, "nats": natsapplet.Flags, "up": up.Flags}[a.Name]
	if flags == nil {
		return fmt.Errorf("%s: the test knows no flags of this applet", path)
	}
	// cli.Service runs a service applet as an app of these flags and no
	// commands.
	return checkUrfave(path, &ucli.App{Flags: flags()}, args)
}

// checkUrfave checks args against app as ctl's reorder and urfave/cli
// read them: a word names a subcommand of the command reached so far
// until the first argument; a flag belongs to that command, or to the
// app, whose flags ctl takes anywhere. After "--" all is arguments.
func checkUrfave(path string, app *ucli.App, args []string) error {
	flags := [][]ucli.Flag{app.Flags}
	subs := app.Commands
	leaf, hidesHelp := len(subs) == 0, app.HideHelpCommand
	argument := false
	for i := 0; i < len(args); i++ {
		w := docWord(args[i])
		switch {
		case w == "--":
			return nil
		case strings.HasPrefix(w, "-") && w != "-":
			name, value, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
			if name == "h" || name == "help" {
				continue
			}
			if typed, ok := strings.CutSuffix(name, "<TAB>"); ok {
				if !slices.ContainsFunc(slices.Concat(flags...), func(f ucli.Flag) bool {
					return slices.ContainsFunc(f.Names(), func(n string) bool { return strings.HasPrefix(n, typed) })
				}) {
					return fmt.Errorf("%s: no flag starts with %s", path, strings.TrimSuffix(w, "<TAB>"))
				}
				continue
			}
			f := findFlag(flags, name)
			if f == nil {
				return fmt.Errorf("%s: no flag %s", path, strings.TrimSuffix(w, "="+value))
			}
			if _, isBool := f.(*ucli.BoolFlag); !isBool && !hasValue {
				i++
			}
		case argument:
		case !leaf:
			cmd := findCommand(subs, w)
			if cmd == nil && (w == "help" || w == "h") && !hidesHelp {
				// urfave/cli adds the help command as it runs: the
				// words after it name the command to show.
				argument = true
				continue
			}
			if cmd == nil {
				if placeholder.MatchString(w) {
					argument = true
					continue
				}
				return fmt.Errorf("%s: no command %q", path, w)
			}
			path += " " + cmd.Name
			flags = append(flags[:1], cmd.Flags)
			subs, leaf, hidesHelp = cmd.Subcommands, len(cmd.Subcommands) == 0, cmd.HideHelpCommand
		case len(app.Commands) == 0 && !placeholder.MatchString(w):
			// A service applet takes no arguments.
			return fmt.Errorf("%s: takes no arguments, got %q", path, w)
		default:
			argument = true
		}
	}
	return nil
}

func findFlag(sets [][]ucli.Flag, name string) ucli.Flag {
	for _, set := range slices.Backward(sets) {
		for _, f := range set {
			if slices.Contains(f.Names(), name) {
				return f
			}
		}
	}
	return nil
}

func findCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}

// checkStdFlags checks args against fl as the flag package parses them:
// flags until the first argument, which only an applet that takes one
// (install DIR) accepts.
func checkStdFlags(path string, fl *flag.FlagSet, args []string, takesArg bool) error {
	for i := 0; i < len(args); i++ {
		w := docWord(args[i])
		if w == "--" || !strings.HasPrefix(w, "-") || w == "-" {
			if !takesArg && !placeholder.MatchString(w) {
				return fmt.Errorf("%s: takes no arguments, got %q", path, w)
			}
			return nil
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(w, "-"), "=")
		if name == "h" || name == "help" {
			continue
		}
		f := fl.Lookup(name)
		if f == nil {
			return fmt.Errorf("%s: no flag %s", path, w)
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); !(ok && b.IsBoolFlag()) && !hasValue {
			i++
		}
	}
	return nil
}

// notCommands are lines the docs show that a reader must not run, by
// document and words, with why each is shown.
var notCommands = map[string]string{
	// The release note quotes the command an earlier ctl printed for an
	// app named --help, which was the bug: a flag, not an object name.
	"docs/UPGRADING.md: narun ctl image delete --help/1/...": "a broken command of an earlier release, quoted",
}

// Every narun command line of README.md and docs/*.md names an applet,
// commands and flags that exist, as the real command trees resolve them:
// a reader who copies one gets the command shown, not a usage error.
func TestDocsCommandLines(t *testing.T) {
	cmds := docCommands(t)
	if len(cmds) < 100 {
		t.Fatalf("only %d narun command lines found in the docs: is the search broken?", len(cmds))
	}
	unused := maps.Clone(notCommands)
	for _, c := range cmds {
		file, _, _ := strings.Cut(c.where, ":")
		key := file + ": " + strings.Join(c.words, " ")
		if _, ok := notCommands[key]; ok {
			delete(unused, key)
			continue
		}
		if err := checkCommand(c.words); err != nil {
			t.Errorf("%s: %v", c.where, err)
		}
	}
	for key := range unused {
		t.Errorf("notCommands lists %q, which the docs no longer show: remove it", key)
	}
	t.Logf("%d command lines checked", len(cmds))
}

// The check refuses what a reader would get a usage error for, and
// takes what urfave/cli and ctl's reorder take.
func TestCheckCommand(t *testing.T) {
	for _, tc := range []struct {
		line, err string
	}{
		{"narun ctl app delete NAME", ""},
		{"narun ctl app status hello --json", ""},
		{"narun ctl app list --timeout 5s", ""},
		{"narun ctl --key-file K secret keygen --add", ""},
		{"narun ctl app help status", ""},
		{"narun ctl logs -f --since 10m APP", ""},
		{"narun-ctl node ls", ""},
		{"narun up --signing=false --label a=b", ""},
		{"/usr/local/bin/narun up", ""},
		{"narun version --json", ""},
		{"narun install /usr/local/bin", ""},
		{"narun ctl deploy --w<TAB>", ""},
		{"narun --version", ""},
		{"narun ctl app delete --purge NAME", "narun ctl app delete: no flag --purge"},
		{"narun ctl app delete NAME --purge=yes", "narun ctl app delete: no flag --purge"},
		{"narun ctl --json app list", "narun ctl: no flag --json"},
		{"narun ctl app remove NAME", `narun ctl app: no command "remove"`},
		{"narun ctl deploy --x<TAB>", "narun ctl deploy: no flag starts with --x"},
		{"narun up --nats-url nats://x", "narun up: no flag --nats-url"},
		{"narun-gw --listen :1 extra", `narun-gw: takes no arguments, got "extra"`},
		{"narun version --yaml", "narun version: no flag --yaml"},
		{"narun deploy app.toml", `narun: no applet "deploy"`},
	} {
		err := checkCommand(strings.Fields(tc.line))
		if got := fmt.Sprint(err); tc.err == "" && err != nil || tc.err != "" && got != tc.err {
			t.Errorf("%s: got %v, want %q", tc.line, err, tc.err)
		}
	}
}

// The rules tell the commands of a shell line from what only looks like
// one.
func TestNarunCommands(t *testing.T) {
	for _, tc := range []struct {
		line string
		want []string
	}{
		{"printf '%s' x | narun ctl secret set db", []string{"narun ctl secret set db"}},
		{"source <(narun ctl completion bash)", []string{"narun ctl completion bash"}},
		{"sudo NARUN_DATA_DIR=/d narun up --check   # exits 0", []string{"narun up --check"}},
		{"CGO_ENABLED=0 go run . ctl app status hello", []string{"narun ctl app status hello"}},
		{"/usr/local/bin/narun up", []string{"/usr/local/bin/narun up"}},
		{"narun ctl [--log-format text|json] COMMAND", []string{"narun ctl [--log-format text|json] COMMAND"}},
		{"narun ctl: invalid spec", nil},
		{"narun-gw -> narun", nil},
		{"/var/lib/narun holds the store", nil},
		{"narun.toml", nil},
	} {
		var got []string
		for _, words := range narunCommands(tc.line) {
			got = append(got, strings.Join(words, " "))
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: got %q, want %q", tc.line, got, tc.want)
		}
	}
}
