package testutil

import (
	"os"
	"path/filepath"
	"reflect"
	"regexp"
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
	// Lang is the first word of the opening fence's info string ("sh"),
	// "" for a bare fence.
	Lang string
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
	var blocks []DocBlock
	for _, b := range DocFences(tb) {
		if b.Lang == lang {
			blocks = append(blocks, b)
		}
	}
	return blocks
}

// DocFences are every fenced code block of Docs, whatever its language.
// A block ends at the first bare fence, so one fenced as text may show
// fences of another language.
func DocFences(tb testing.TB) []DocBlock {
	tb.Helper()
	root := ModuleRoot(tb)
	var blocks []DocBlock
	for _, file := range Docs(tb) {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			tb.Fatal(err)
		}
		var open *DocBlock
		for i, line := range strings.Split(string(data), "\n") {
			fence := strings.TrimSpace(line)
			switch {
			case open != nil && fence == "```":
				blocks = append(blocks, *open)
				open = nil
			case open != nil:
				open.Text += line + "\n"
			case strings.HasPrefix(fence, "```"):
				open = &DocBlock{File: file, Line: i + 1}
				// The info string's first word is the language.
				if info := strings.Fields(strings.TrimPrefix(fence, "```")); len(info) > 0 {
					open.Lang = info[0]
				}
			}
		}
		if open != nil {
			tb.Errorf("%s:%d: ```%s block never closed", file, open.Line, open.Lang)
		}
	}
	return blocks
}

// DocSpan is an inline code span of the documentation, outside any
// fenced block.
type DocSpan struct {
	// File is the document, relative to the module root.
	File string
	// Line is the line the span starts on.
	Line int
	// Text is the span's content, a line break in it read as a space.
	Text string
	// Source is the whole line the span starts on, which says whether
	// it is in a table row.
	Source string
	// Section is the title of the nearest heading above the span
	// ("narun ctl" under "# narun ctl").
	Section string
}

// codeSpan is a span of one backtick, which may wrap a line, as
// Markdown's may.
var codeSpan = regexp.MustCompile("`([^`]+)`")

// DocSpans are the inline code spans of Docs.
func DocSpans(tb testing.TB) []DocSpan {
	tb.Helper()
	root := ModuleRoot(tb)
	var spans []DocSpan
	for _, file := range Docs(tb) {
		data, err := os.ReadFile(filepath.Join(root, file))
		if err != nil {
			tb.Fatal(err)
		}
		lines := strings.Split(string(data), "\n")
		// Fenced lines are blanked, not cut, so that offsets keep their
		// lines, and headings and spans are read from the rest.
		section := make([]string, len(lines))
		inFence, heading := false, ""
		for i, line := range lines {
			if strings.HasPrefix(strings.TrimSpace(line), "```") {
				inFence = !inFence || strings.TrimSpace(line) != "```"
				lines[i] = ""
			} else if inFence {
				lines[i] = ""
			} else if strings.HasPrefix(line, "#") {
				heading = strings.TrimSpace(strings.TrimLeft(line, "#"))
			}
			section[i] = heading
		}
		text := strings.Join(lines, "\n")
		for _, m := range codeSpan.FindAllStringSubmatchIndex(text, -1) {
			line := strings.Count(text[:m[0]], "\n")
			spans = append(spans, DocSpan{
				File:    file,
				Line:    line + 1,
				Text:    strings.ReplaceAll(text[m[2]:m[3]], "\n", " "),
				Source:  lines[line],
				Section: section[line],
			})
		}
	}
	return spans
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
