package ctl

import (
	"context"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/suggest"
)

// suggestion is the one name of among that name is probably a typo of:
// the same but for case, or else the only one closest to it within two
// edits (suggest.Nearest); "" when name is among them, or there is none
// or no single one.
func suggestion(name string, among []string) string {
	for _, c := range among {
		if c == name {
			return ""
		}
		if strings.EqualFold(c, name) {
			return c
		}
	}
	return suggest.Nearest(name, among)
}

// didYouMean is " (did you mean "x"?" and then rest and ")", or, with no
// suggestion, " (" rest ")", or "" when rest is empty too.
func didYouMean(name string, among []string, rest string) string {
	s := suggestion(name, among)
	switch {
	case s != "" && rest != "":
		return fmt.Sprintf(" (did you mean %q? if not: %s)", s, rest)
	case s != "":
		return fmt.Sprintf(" (did you mean %q?)", s)
	case rest != "":
		return " (" + rest + ")"
	}
	return ""
}

// secretNames lists the secrets kv holds, to suggest one for the absent
// ones (none: nothing to list). A guess is not worth failing for: a
// listing that fails suggests nothing.
func (e *env) secretNames(ctx context.Context, kv jetstream.KeyValue, absent []string) []string {
	if len(absent) == 0 {
		return nil
	}
	names, err := e.keys(ctx, kv)
	if err != nil {
		e.log.Debug("list secrets to suggest a name", "err", err)
	}
	return names
}

// fileNames lists the objects of narun-files, to suggest one for the
// absent ones (none: nothing to list); like secretNames, a listing that
// fails suggests nothing.
func (e *env) fileNames(ctx context.Context, absent []string) []string {
	if len(absent) == 0 {
		return nil
	}
	infos, _, err := e.objectInfos(ctx, names.FilesBucket)
	if err != nil {
		e.log.Debug("list files to suggest a name", "err", err)
	}
	stored := make([]string, 0, len(infos))
	for _, in := range infos {
		stored = append(stored, in.Name)
	}
	return stored
}
