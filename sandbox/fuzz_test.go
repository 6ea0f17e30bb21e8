package sandbox

import (
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// FuzzValidate validates arbitrary configs, as the launcher reads them from
// its pipe: a config is refused with ErrInvalidConfig or accepted without
// panicking, and what is accepted keeps the promises the launcher relies
// on (absolute paths, a cgroup under narun/, accesses of r, w and x) and
// is accepted again after a round trip through JSON.
func FuzzValidate(f *testing.F) {
	for _, c := range []Config{
		{Binary: "/bin/app", Dir: "/var/lib/narun/instances/a-0", UID: 100000, GID: 100000},
		{
			Binary: "/bin/app", Dir: "/d", Network: NetworkNone,
			Outbound: []Bridge{NATSBridge("/d")}, Inbound: []Bridge{HTTPBridge("/d", 8080)},
			Landlock: LandlockConfig{
				Mode: LandlockBestEffort, Presets: []string{PresetTmp, PresetCerts},
				Paths: []Path{{Path: "/srv", Access: "rw", Optional: true}}, ConnectTCP: []uint16{443},
			},
			UID: 1, GID: 1, Resources: Resources{MemoryMax: 1 << 20, PidsMax: 10}, Cgroup: "narun/x/../y",
		},
		{Binary: "app", Dir: "/d", Cgroup: "/narun/a", AllowRoot: true, Hostname: "h"},
	} {
		b, err := json.Marshal(c)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"binary":"/a","dir":"/d","uid":4294967295,"gid":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var c Config
		if json.Unmarshal(data, &c) != nil {
			return
		}
		if err := c.Validate(); err != nil {
			if !strings.HasPrefix(err.Error(), ErrInvalidConfig.Error()+": ") {
				t.Fatalf("error %q does not say the config is invalid", err)
			}
			return
		}
		if cg := c.cgroupPath(); filepath.IsAbs(cg) || !strings.HasPrefix(cg, CgroupParent+"/") || strings.Contains(cg, "..") {
			t.Fatalf("cgroup %q accepted for %s", cg, data)
		}
		for _, p := range append(landlockPaths(&c), c.Landlock.Paths...) {
			if !filepath.IsAbs(p.Path) || p.Access == "" || strings.Trim(p.Access, "rwx") != "" {
				t.Fatalf("landlock path %+v accepted for %s", p, data)
			}
		}
		for _, p := range writablePaths(&c) {
			if !filepath.IsAbs(p) {
				t.Fatalf("writable path %q accepted for %s", p, data)
			}
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		var back Config
		if err := json.Unmarshal(b, &back); err != nil || !reflect.DeepEqual(normal(back), normal(c)) {
			t.Fatalf("config %s reads back from %s as %+v (%v)", data, b, back, err)
		}
		if err := back.Validate(); err != nil {
			t.Fatalf("config %s refused after a round trip: %v", data, err)
		}
	})
}

// normal is c with its empty lists nil, which JSON does not tell apart.
func normal(c Config) Config {
	for _, l := range []*[]string{&c.Args, &c.Env, &c.Landlock.Presets} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	for _, l := range []*[]Bridge{&c.Outbound, &c.Inbound} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	for _, l := range []*[]uint16{&c.Landlock.ConnectTCP, &c.Landlock.BindTCP} {
		if len(*l) == 0 {
			*l = nil
		}
	}
	if len(c.Landlock.Paths) == 0 {
		c.Landlock.Paths = nil
	}
	return c
}

// FuzzUnescapeMountPath undoes the kernel's escapes of mount points in
// mountinfo: a path escaped as the kernel does (space, tab, newline and
// backslash as \ooo) reads back as itself.
func FuzzUnescapeMountPath(f *testing.F) {
	f.Add("/var/lib/narun/instances/a b")
	f.Add(`/x\y` + "\t\n")
	f.Add("")
	f.Fuzz(func(t *testing.T, p string) {
		var b strings.Builder
		for i := 0; i < len(p); i++ {
			switch c := p[i]; c {
			case ' ', '\t', '\n', '\\':
				b.WriteString(`\` + string(rune('0'+c>>6)) + string(rune('0'+c>>3&7)) + string(rune('0'+c&7)))
			default:
				b.WriteByte(c)
			}
		}
		if got := unescapeMountPath(b.String()); got != p {
			t.Fatalf("unescapeMountPath(%q) = %q, want %q", b.String(), got, p)
		}
		_ = unescapeMountPath(p)
	})
}
