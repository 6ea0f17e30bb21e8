package config_test

import (
	"encoding/json"
	"math/big"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/narun/narun/applets/internal/config"
)

// FuzzLoad loads arbitrary narun.toml files: a file is loaded or refused
// without panicking, every line of a refusal names the file (and so the
// operator knows what to fix), and placing any key of a loaded file
// (Where, as errors found after loading do) names that file too.
func FuzzLoad(f *testing.F) {
	if b, err := os.ReadFile(example); err == nil {
		f.Add(string(b), "gateway.timeout")
	}
	f.Add("[gateway]\nlisten = \":8080\"\nlisne = \":1\"\n", "gateway.lisne")
	f.Add("[[nats.users]]\nuser = \"a\"\npassword = \"b\"\nrole = \"apps\"\n", "nats.users[0].password")
	f.Add("[runner]\nlabels = \"edge\"\n", "runner.labels")
	f.Add("data_dir = \"\"\n", "data_dir")
	f.Add("[gateway]\nmax_body = \"1TiB\"\ntimeout = 0\n[[gateway.routes]]\npath = \"/\"\nservice = \"a\"\nmax_body = 5\n", "gateway.routes[0].max_body")
	f.Add("[nats]\nnkeys = [1]\n[ctl]\ntimeout = true\n", "nats.nkeys[x]")
	// One file, rewritten for each input: a directory per input would
	// cost more than loading it.
	path := filepath.Join(f.TempDir(), "narun.toml")
	f.Fuzz(func(t *testing.T, body, key string) {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.Load(path, func(string) string { return "" })
		if err != nil {
			for line := range strings.Lines(err.Error()) {
				if !strings.HasPrefix(line, path) {
					t.Fatalf("error line %q does not name the file", line)
				}
			}
			return
		}
		if cfg.Path != path {
			t.Fatalf("Path %q, want %q", cfg.Path, path)
		}
		if w := cfg.Where(key); w != path && !strings.HasPrefix(w, path+":") {
			t.Fatalf("Where(%q) = %q, not in %s", key, w, path)
		} else if n, ok := strings.CutPrefix(w, path+":"); ok {
			if line, err := strconv.Atoi(n); err != nil || line < 1 || line > strings.Count(body, "\n")+1 {
				t.Fatalf("Where(%q) = %q: no such line", key, w)
			}
		}
	})
}

// FuzzParseSize parses arbitrary sizes: one that parses is in range and
// reads the same when written back as a number of bytes.
func FuzzParseSize(f *testing.F) {
	for _, s := range []string{"64MiB", "1048576", " 1 TB ", "0", "4611686018427387904", "1GiB", "-1", "1.5MB", "K"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, err := config.ParseSize(s)
		if err != nil {
			if !strings.Contains(err.Error(), strconv.Quote(s)) {
				t.Fatalf("error %q does not name the value %q", err, s)
			}
			return
		}
		if n < 0 || n > 1<<62 {
			t.Fatalf("ParseSize(%q) = %d, out of range", s, n)
		}
		again, err := config.ParseSize(strconv.FormatInt(int64(n), 10))
		if err != nil || again != n {
			t.Fatalf("ParseSize(%q) = %d, but its decimal form reads %d, %v", s, n, again, err)
		}
	})
}

// FuzzSizeJSON reads arbitrary JSON numbers as sizes, as route entries of
// narun-routes carry them: a size read is exactly the number written, on
// every architecture, and one that is not a whole number of bytes in
// range is refused.
func FuzzSizeJSON(f *testing.F) {
	for _, s := range []string{"1048576", "1e6", "1.5", "-1", "9007199254740993", "9223372036854775807", "9223372036854775808", "1e300", `"64MiB"`, "0.0"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		// The judge reads the number exactly; a huge exponent would cost
		// it far more than the code under test.
		if _, exp, ok := strings.Cut(strings.ToLower(s), "e"); ok {
			if e, err := strconv.Atoi(exp); err != nil || e < -40 || e > 40 {
				return
			}
		}
		var n big.Rat
		if _, ok := n.SetString(s); !ok || !json.Valid([]byte(s)) {
			return
		}
		var got config.Size
		err := json.Unmarshal([]byte(s), &got)
		exact := n.IsInt() && n.Sign() >= 0 && n.Num().IsInt64()
		switch {
		case exact && err != nil:
			t.Fatalf("size %s refused: %v", s, err)
		case exact && got != config.Size(n.Num().Int64()):
			t.Fatalf("size %s read as %d", s, got)
		case !exact && err == nil:
			t.Fatalf("size %s read as %d, want an error", s, got)
		}
	})
}
