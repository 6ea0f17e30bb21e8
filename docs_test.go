package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

var (
	fenced   = regexp.MustCompile("(?ms)^[ \t]*```.*?^[ \t]*```[ \t]*$")
	codeSpan = regexp.MustCompile("`([^`]+)`")
)

// Every path of this repository that README.md or docs/*.md quote as code
// (`testdata/e2e`, `scripts/e2e.sh`) exists: a file moved or renamed
// leaves readers looking for it. A path is a word of a code span that
// starts with a top-level directory of the repository; one with a
// wildcard must match something. Code blocks are commands and files to
// write, whose paths are the reader's, so they are left out.
func TestDocsRepoPathsExist(t *testing.T) {
	entries, err := os.ReadDir(".")
	if err != nil {
		t.Fatal(err)
	}
	top := map[string]bool{}
	for _, e := range entries {
		if e.IsDir() && !strings.HasPrefix(e.Name(), ".") {
			top[e.Name()] = true
		}
	}
	docs, err := filepath.Glob("docs/*.md")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, doc := range append([]string{"README.md"}, docs...) {
		data, err := os.ReadFile(doc)
		if err != nil {
			t.Fatal(err)
		}
		// Blanked, not cut, so that offsets keep their lines.
		text := fenced.ReplaceAllStringFunc(string(data), func(block string) string {
			return strings.Repeat("\n", strings.Count(block, "\n"))
		})
		for _, m := range codeSpan.FindAllStringSubmatchIndex(text, -1) {
			line := 1 + strings.Count(text[:m[0]], "\n")
			for _, word := range strings.Fields(text[m[2]:m[3]]) {
				p := strings.TrimPrefix(strings.TrimRight(strings.TrimLeft(word, `("'`), `)"',.;:`), "./")
				dir, _, ok := strings.Cut(p, "/")
				if !ok || !top[dir] {
					continue
				}
				n++
				matches, err := filepath.Glob(p)
				if err != nil || len(matches) == 0 {
					t.Errorf("%s:%d: `%s` names %s, which is not in the repository", doc, line, text[m[2]:m[3]], p)
				}
			}
		}
	}
	if n == 0 {
		t.Fatal("no repository path found in the docs: is the search broken?")
	}
	t.Logf("%d paths checked", n)
}
