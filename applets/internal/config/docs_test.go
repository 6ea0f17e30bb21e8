package config_test

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	"github.com/BurntSushi/toml"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/runner"
	"github.com/narun/narun/applets/internal/testutil"
	"github.com/narun/narun/embednats"
)

// Every ```toml block of the documentation whose top-level keys are all
// narun.toml's loads as a narun.toml does, strictly: a key the docs
// misspell, or a value of the wrong kind, fails here rather than on a
// node. A block of only some tables is still a whole narun.toml, since
// every key may be left out. Blocks of other keys are the app specs, whose
// test in the spec package also fails a block that is not TOML or fits
// neither.
//
// Load opens none of the files a block names (certificates, keys, the
// data dir): embednats and the runner read them at start. So the
// examples' /etc/narun paths need not exist. A block whose first line
// names narun.toml ("# /etc/narun/narun.toml on edge-1") is a whole file,
// not tables to add to one, and is also checked as a start checks it:
// [nats] as `narun nats --check` does (embednats.Check), [runner] as the
// runner does (runner.CheckConfig). Those read the certificate files, so
// such a block names none, and the store in the data dir, which
// NARUN_DATA_DIR moves to an empty one, as a node's service may.
func TestDocsNodeConfigsLoad(t *testing.T) {
	keys := testutil.TOMLKeys(reflect.TypeFor[config.File]())
	n := 0
	for _, b := range testutil.DocBlocks(t, "toml") {
		var doc map[string]any
		if _, err := toml.Decode(b.Text, &doc); err != nil || len(doc) == 0 {
			continue
		}
		ours := true
		for k := range doc {
			ours = ours && keys[k]
		}
		if !ours {
			continue
		}
		n++
		// Named after the document and padded to its lines, so that
		// Load's "file:line" is the document's line.
		path := filepath.Join(t.TempDir(), filepath.Base(b.File))
		if err := os.WriteFile(path, []byte(b.Padded()), 0o600); err != nil {
			t.Fatal(err)
		}
		dataDir := t.TempDir()
		cfg, err := config.Load(path, func(k string) string {
			if k == "NARUN_DATA_DIR" {
				return dataDir
			}
			return ""
		})
		if err != nil {
			t.Errorf("%s:%d: block does not load as narun.toml:\n%s", b.File, b.Line, strings.ReplaceAll(err.Error(), path, b.File))
			continue
		}
		if first, _, _ := strings.Cut(b.Text, "\n"); !strings.HasPrefix(first, "#") || !strings.Contains(first, "narun.toml") {
			continue
		}
		if err := embednats.Check(cli.EmbedConfig(cfg)); err != nil {
			err = cli.PlaceNATSError(cfg, err, nil)
			t.Errorf("%s:%d: narun.toml's [nats] would not start a server:\n%s", b.File, b.Line, strings.ReplaceAll(err.Error(), path, b.File))
		}
		if err := runner.CheckConfig(cfg, false); err != nil {
			t.Errorf("%s:%d: narun.toml's [runner] would not start a runner:\n%s", b.File, b.Line, strings.ReplaceAll(err.Error(), path, b.File))
		}
	}
	if n == 0 {
		t.Fatal("no narun.toml block found in the docs: is the search broken?")
	}
}
