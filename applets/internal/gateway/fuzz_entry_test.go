package gateway

import (
	"encoding/json"
	"log/slog"
	"math"
	"math/big"
	"net/http"
	"strings"
	"testing"
	"time"
)

// FuzzAppRoutes reads arbitrary narun-routes entries, as any client that
// can write the bucket could store them: an entry is refused or read
// without panicking, what is read reads the same after a round trip
// through JSON (what ctl stores is what gateways serve), and compiling it
// agrees with the check ctl makes before storing it.
func FuzzAppRoutes(f *testing.F) {
	f.Add("hello", []byte(`[{"path":"/hello/","service":"hello","methods":["GET"]}]`))
	f.Add("api", []byte(`[{"host":"*.example.com","path":"/api","match":"exact","timeout":"5s","max_body":"64MiB","strip_prefix":true}]`))
	f.Add("a", []byte(`[{"path":"/","max_body":1048576},{"path":"/","methods":["post"]}]`))
	f.Add("b", []byte(`[{"path":"/x","max_body":1e300,"timeout":"-1s"}]`))
	f.Add("c", []byte("[]\n# narun-signature: narun-ed25519:AAAA sig\n"))
	f.Add("d", []byte(`null`))
	g := &Gateway{log: slog.New(slog.DiscardHandler)}
	f.Fuzz(func(t *testing.T, app string, value []byte) {
		routes, _, _ := g.appRoutes(nil, app, value)
		if routes == nil {
			return
		}
		b, err := json.Marshal(routes)
		if err != nil {
			t.Fatalf("routes read from %q do not encode: %v", value, err)
		}
		again, _, _ := g.appRoutes(nil, app, b)
		b2, err := json.Marshal(again)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("routes of %q read back as %s, not %s (%v)", value, b2, b, err)
		}
		compiled, err := compileApp(app, routes, time.Second, 1<<20)
		checked := CheckAppRoutes(app, routes, nil)
		if err != nil {
			if checked == nil {
				t.Fatalf("CheckAppRoutes accepts %s, which does not compile: %v", value, err)
			}
			return
		}
		if _, err := newTable(compiled); (err == nil) != (checked == nil) {
			t.Fatalf("CheckAppRoutes(%s) = %v, the gateway's table %v", value, checked, err)
		}
		for _, r := range compiled {
			if r.timeout <= 0 || r.maxBody <= 0 || !strings.HasPrefix(r.cfg.Path, "/") || !validSubject(r.cfg.Service) {
				t.Fatalf("route %+v of %s compiled", r.cfg, value)
			}
		}
	})
}

// FuzzClientDeadline reads arbitrary Grpc-Timeout and Connect-Timeout-Ms
// values: a deadline read is what the value says, in whole units, capped
// at the longest duration, and a value that does not follow the protocol
// gives none.
func FuzzClientDeadline(f *testing.F) {
	for _, v := range []string{"1S", "99999999H", "100m", "5u", "0n", "12345678M", "+1S", "1", "", "30000", "9999999999", "-5", "1 S"} {
		f.Add(v)
	}
	units := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second, 'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}
	f.Fuzz(func(t *testing.T, v string) {
		d, ok := clientDeadline(http.Header{"Grpc-Timeout": {v}}, true)
		var want *big.Int
		if n := len(v); n >= 2 && n <= 9 && allDigits(v[:n-1]) && units[v[n-1]] != 0 {
			want, _ = new(big.Int).SetString(v[:n-1], 10)
			want.Mul(want, big.NewInt(int64(units[v[n-1]])))
		}
		checkDeadline(t, "Grpc-Timeout", v, d, ok, want)

		d, ok = clientDeadline(http.Header{"Connect-Timeout-Ms": {v}}, false)
		want = nil
		if len(v) >= 1 && len(v) <= 10 && allDigits(v) {
			want, _ = new(big.Int).SetString(v, 10)
			want.Mul(want, big.NewInt(int64(time.Millisecond)))
		}
		checkDeadline(t, "Connect-Timeout-Ms", v, d, ok, want)
	})
}

func checkDeadline(t *testing.T, header, v string, d time.Duration, ok bool, want *big.Int) {
	t.Helper()
	switch {
	case want == nil && ok:
		t.Fatalf("%s %q read as %v, want no deadline", header, v, d)
	case want == nil:
	case !ok:
		t.Fatalf("%s %q not read, want %v ns", header, v, want)
	case want.IsInt64() && d != time.Duration(want.Int64()), !want.IsInt64() && d != math.MaxInt64:
		t.Fatalf("%s %q read as %d ns, want %v", header, v, d, want)
	}
}

func allDigits(s string) bool {
	return s != "" && strings.Trim(s, "0123456789") == ""
}
