package spec_test

import (
	"fmt"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/testutil"
)

// fragmentBase is the smallest spec, which a block without a name (one
// table of a spec, such as [[routes]]) is checked within.
var fragmentBase = []string{`name = "doc"`, `version = "1"`, `nodes = ["node-1"]`}

// Every ```toml block of the documentation is a narun.toml or an app spec,
// told apart by its top-level keys, which the two formats never share: a
// block whose keys are all narun.toml's is the config package's to load,
// one whose keys are all a spec's is parsed here as narun ctl deploy
// parses a spec, with every rule. A block that fits neither (a misspelt
// table, or one with no key at all) fails, since no loader would check it.
func TestDocsAppSpecsParse(t *testing.T) {
	specKeys := testutil.TOMLKeys(reflect.TypeFor[spec.App]())
	nodeKeys := testutil.TOMLKeys(reflect.TypeFor[config.File]())
	n := 0
	for _, b := range testutil.DocBlocks(t, "toml") {
		var doc map[string]any
		if _, err := toml.Decode(b.Text, &doc); err != nil {
			t.Errorf("%s:%d: block is not TOML: %v", b.File, b.Line, err)
			continue
		}
		var neither []string
		node, app := len(doc) > 0, len(doc) > 0
		for k := range doc {
			node, app = node && nodeKeys[k], app && specKeys[k]
			if !nodeKeys[k] && !specKeys[k] {
				neither = append(neither, k)
			}
		}
		switch {
		case len(doc) == 0:
			t.Errorf("%s:%d: block holds no key, so neither narun.toml's nor a spec's loader can check it: fence it as text if it is no file", b.File, b.Line)
			continue
		case node:
			continue
		case len(neither) > 0:
			slices.Sort(neither)
			t.Errorf("%s:%d: block is neither a narun.toml nor an app spec: keys %q are neither's", b.File, b.Line, neither)
			continue
		case !app:
			t.Errorf("%s:%d: block mixes narun.toml's keys with an app spec's", b.File, b.Line)
			continue
		}
		n++
		data := b.Padded()
		if _, named := doc["name"]; !named {
			if b.Line < len(fragmentBase) {
				t.Fatalf("%s:%d: no room before the block for the spec it is a table of", b.File, b.Line)
			}
			data = strings.Join(fragmentBase, "\n") + data[len(fragmentBase)-1:]
		}
		if _, err := spec.Parse(b.File, []byte(data)); err != nil {
			t.Errorf("%s:%d: block does not parse as an app spec%s:\n%v", b.File, b.Line, fragmentNote(doc), err)
		}
	}
	if n == 0 {
		t.Fatal("no app spec block found in the docs: is the search broken?")
	}
}

func fragmentNote(doc map[string]any) string {
	if _, named := doc["name"]; named {
		return ""
	}
	return fmt.Sprintf(" (no name: checked as part of %s)", strings.Join(fragmentBase, ", "))
}
