package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// DocBlock is a fenced code block of the documentation.
type DocBlock struct {
	// File is the document, relative to the module root ("docs/SPEC.md").
	File string
	// Line is the line of the opening fence; the block's first line is
	// Line+1.
	Line int
	// Text is the block's content, without its fences.
	Text string
}

// Padded is the block's text after Line empty lines, so that a line
// number a loader reports in it is the document's.
func (b DocBlock) Padded() string {
	return strings.Repeat("\n", b.Line) + b.Text
}

// ModuleRoot is the directory of go.mod, found from the working
// directory up, which go test makes the package's.
func ModuleRoot(tb testing.TB) string {
	tb.Helper()
	dir, err := os.Getwd()
	if err != nil {
		tb.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			tb.Fatal("no go.mod above the working directory")
		}
		dir = parent
	}
}

// Docs are the documents users read: README.md and docs/*.md, relative
// to the module root.
func Docs(tb testing.TB) []string {
	tb.Helper()
	root := ModuleRoot(tb)
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		tb.Fatal(err)
	}
	files := []string{"README.md"}
	for _, d := range docs {
		files = append(files, filepath.Join("docs", filepath.Base(d)))
	}
	return files
}

// DocBlocks are the code blocks of Docs fenced as lang ("```toml").
func DocBlocks(tb testing.TB, lang string) []DocBlock {
	tb.Helper()
	root := ModuleRoot(tb)
	var blocks []DocBlock
	for _, file := range Docs(tb) {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			tb.Fatal(err)
		}
		var open *DocBlock
		// other is inside a block of another language, which may show
		// a fence of lang as text.
		other := false
		for i, line := range strings.Split(string(data), "\n") {
			fence := strings.TrimSpace(line)
			switch {
			case (open != nil || other) && fence == "```":
				if open != nil {
					blocks = append(blocks, *open)
				}
				open, other = nil, false
			case open != nil:
				open.Text += line + "\n"
			case other:
			case strings.HasPrefix(fence, "```"):
				// The info string's first word is the language.
				if info := strings.Fields(strings.TrimPrefix(fence, "```")); len(info) > 0 && info[0] == lang {
					open = &DocBlock{File: file, Line: i + 1}
				} else {
					other = true
				}
			}
		}
		if open != nil {
			tb.Errorf("%s:%d: ```%s block never closed", file, open.Line, lang)
		}
	}
	return blocks
}

// TOMLKeys are the keys a TOML table decodes into a struct of type t.
func TOMLKeys(t reflect.Type) map[string]bool {
	keys := map[string]bool{}
	for f := range t.Fields() {
		if name, _, _ := strings.Cut(f.Tag.Get("toml"), ","); name != "" && name != "-" {
			keys[name] = true
		}
	}
	return keys
}
