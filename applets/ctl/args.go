package ctl

import (
	"slices"
	"strings"

	ucli "github.com/urfave/cli/v2"
)

// reorder moves flags given after positional arguments in front of them, so
// `ctl app status NAME --json` and `ctl deploy app.toml --binary x --wait`
// work although urfave/cli stops parsing flags at the first argument. Global
// flags are moved to the front wherever they appear. Everything after "--"
// stays positional.
func reorder(app *ucli.App, args []string) []string {
	// urfave/cli looks for the completion flag in the last position only.
	if args[len(args)-1] == "--generate-bash-completion" {
		return args
	}
	global := flagIndex(app.Flags)
	var front, rest []string
	front = append(front, args[0])
	cmds := app.Commands
	var path []string
	var local map[string]bool
	var flags, positional []string
	i := 1
	for ; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			break
		}
		if strings.HasPrefix(a, "-") && a != "-" {
			name, hasValue := flagName(a)
			takes, isLocal := local[name]
			if !isLocal {
				takes = global[name]
			}
			dst := &flags
			if !isLocal {
				if _, ok := global[name]; ok {
					dst = &front
				}
			}
			*dst = append(*dst, a)
			if takes && !hasValue && i+1 < len(args) {
				i++
				*dst = append(*dst, args[i])
			}
			continue
		}
		if len(positional) == 0 {
			if cmd := findCommand(cmds, a); cmd != nil {
				path = append(path, flags...)
				path = append(path, a)
				flags = nil
				cmds = cmd.Subcommands
				local = flagIndex(cmd.Flags)
				continue
			}
		}
		positional = append(positional, a)
	}
	rest = append(rest, path...)
	rest = append(rest, flags...)
	if i < len(args) || slices.ContainsFunc(positional, func(s string) bool { return strings.HasPrefix(s, "-") }) {
		rest = append(rest, "--")
	}
	rest = append(rest, positional...)
	if i < len(args) {
		rest = append(rest, args[i+1:]...)
	}
	return append(front, rest...)
}

// flagIndex maps every flag name and alias to whether it takes a value.
func flagIndex(flags []ucli.Flag) map[string]bool {
	m := map[string]bool{}
	for _, f := range flags {
		_, isBool := f.(*ucli.BoolFlag)
		for _, n := range f.Names() {
			m[n] = !isBool
		}
	}
	// urfave adds these itself.
	m["help"], m["h"], m["generate-bash-completion"] = false, false, false
	return m
}

func flagName(a string) (string, bool) {
	n := strings.TrimLeft(a, "-")
	if i := strings.IndexByte(n, '='); i >= 0 {
		return n[:i], true
	}
	return n, false
}

func findCommand(cmds []*ucli.Command, name string) *ucli.Command {
	for _, c := range cmds {
		if c.HasName(name) {
			return c
		}
	}
	return nil
}
