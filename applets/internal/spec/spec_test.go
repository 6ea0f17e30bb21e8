package spec

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/signing"
)

const smallest = `name = "hello"
version = "1.0.0"
nodes = ["node-1"]        # node ids, or: labels = { role = "edge" }
replicas = 2              # per selected node (default 1)
[[routes]]                # optional: registered with every gateway on deploy
path = "/hello/"          # service defaults to the app name
`

func TestSmallestContractSpec(t *testing.T) {
	a, err := Parse("hello.toml", []byte(smallest))
	if err != nil {
		t.Fatal(err)
	}
	if a.Name != "hello" || a.Replicas != 2 || a.Mode != ModeExec {
		t.Errorf("got name %q replicas %d mode %q", a.Name, a.Replicas, a.Mode)
	}
	if len(a.Routes) != 1 || a.Routes[0].Service != "hello" || a.Routes[0].Match != "prefix" {
		t.Errorf("route defaults not applied: %+v", a.Routes)
	}
	if a.Restart.Policy != RestartAlways || a.Restart.InitialBackoff.D() != 100*time.Millisecond || a.Restart.MaxBackoff.D() != 5*time.Minute {
		t.Errorf("restart defaults: %+v", a.Restart)
	}
	if a.Health.Type != HealthMicro || a.Health.Service != "hello" || a.Health.RestartAfter != 0 {
		t.Errorf("health default for an app with routes (never restarted for failing checks): %+v", a.Health)
	}
	if a.StopSig().String() != "terminated" || a.StopTimeout.D() != 10*time.Second {
		t.Errorf("stop defaults: %v %v", a.StopSig(), a.StopTimeout.D())
	}
	if a.Restart.ResetAfter.D() != 10*time.Minute || a.Health.StartGrace.D() != 30*time.Second || a.Health.MinHealthy.D() != DefaultMinHealthy {
		t.Errorf("absent reset_after %v, start_grace %v, min_healthy %v: want the defaults", a.Restart.ResetAfter.D(), a.Health.StartGrace.D(), a.Health.MinHealthy.D())
	}
	// 0 has a meaning of its own: the first passed check counts.
	zero, err := Parse("hello.toml", []byte(smallest+"[health]\nmin_healthy = 0\n"))
	if err != nil || zero.Health.MinHealthy != 0 {
		t.Errorf("min_healthy = 0: %v, %v", err, zero)
	}
}

func TestFullSpec(t *testing.T) {
	src := `name = "full_app-2"
version = "2.1.0+build.7"
args = ["--flag", "x"]
env = { LOG_LEVEL = "debug" }
labels = { role = "edge" }
mode = "sandbox"
stop_signal = "INT"
stop_timeout = "3s"

[sandbox]
landlock = "best-effort"
presets = ["stdio", "dns", "certs"]
network = "isolated"
user = "nobody"
[[sandbox.paths]]
path = "/var/lib/thing"
mode = "rw"

[resources]
memory = "64MiB"
cpu = 0.5
pids = 64

[restart]
policy = "on-failure"
max_failures = 5
jitter = 0

[health]
type = "http"
path = "/healthz"
restart_after = 4

[http]
port = 8081

[[files]]
object = "app-config"
path = "conf/app.yaml"

[[secrets]]
name = "db-pass"
env = "DB_PASSWORD"

[[secrets]]
name = "tls-key"
file = "secrets/tls.key"

[binaries.arm64]
object = "full_app-2/2.1.0+build.7/linux-arm64"
sha256 = "` + strings.Repeat("ab", 32) + `"
`
	a, err := Parse("full.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if a.Health.Port != 8081 || a.Health.RestartAfter != 4 || a.StopSignal != "SIGINT" || a.Resources.Memory != 64<<20 || a.Restart.Jitter != 0 {
		t.Errorf("unexpected values: %+v", a)
	}
	if a.Sandbox.Paths[0].Mode != "rw" || a.Sandbox.Network != "isolated" {
		t.Errorf("sandbox: %+v", a.Sandbox)
	}
	if !a.Selects("any", map[string]string{"role": "edge", "x": "y"}) || a.Selects("any", map[string]string{"role": "core"}) {
		t.Error("label selector")
	}
	if b, ok := a.Binary("arm64"); !ok || b.SHA256 != strings.Repeat("ab", 32) {
		t.Errorf("binary: %+v", b)
	}
}

func TestErrorsNameKeyAndLine(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	tests := []struct {
		name string
		src  string
		key  string
		line int
	}{
		{"unknown top key", base + "replica = 2\n", "replica", 4},
		{"unknown nested key", base + "[restart]\npolicy = \"always\"\nbackof = \"1s\"\n", "restart.backof", 6},
		{"bad type", base + "replicas = \"two\"\n", "replicas", 4},
		{"negative duration", base + "[restart]\nmax_backoff = \"-1s\"\n", "restart.max_backoff", 5},
		{"negative replicas", base + "replicas = -1\n", "replicas", 4},
		{"huge replicas", base + "replicas = 100000\n", "replicas", 4},
		{"name with dot", "name = \"a.b\"\nversion = \"1\"\nnodes = [\"n1\"]\n", "name", 1},
		{"name with wildcard", "name = \"a*\"\nversion = \"1\"\nnodes = [\"n1\"]\n", "name", 1},
		{"name with slash", "name = \"a/b\"\nversion = \"1\"\nnodes = [\"n1\"]\n", "name", 1},
		{"name unicode", "name = \"héllo\"\nversion = \"1\"\nnodes = [\"n1\"]\n", "name", 1},
		{"name too long", "name = \"" + strings.Repeat("a", 65) + "\"\nversion = \"1\"\nnodes = [\"n1\"]\n", "name", 1},
		{"missing version", "name = \"a\"\nnodes = [\"n1\"]\n", "version", 0},
		{"no selector", "name = \"a\"\nversion = \"1\"\n", "nodes", 0},
		{"bad node id", "name = \"a\"\nversion = \"1\"\nnodes = [\"n.1\"]\n", "nodes[0]", 3},
		{"bad mode", base + "mode = \"jail\"\n", "mode", 4},
		{"sandbox in exec mode", base + "[sandbox]\nnetwork = \"none\"\n", "sandbox", 4},
		{"bad landlock", base + "mode = \"sandbox\"\n[sandbox]\nlandlock = \"maybe\"\n", "sandbox.landlock", 6},
		{"bad preset", base + "mode = \"sandbox\"\n[sandbox]\npresets = [\"stdio\", \"home\"]\n", "sandbox.presets[1]", 6},
		{"bad path mode", base + "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/x\"\nmode = \"r\"\n[[sandbox.paths]]\npath = \"/y\"\nmode = \"rr\"\n", "sandbox.paths[1].mode", 10},
		{"relative sandbox path", base + "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"x\"\nmode = \"r\"\n", "sandbox.paths[0].path", 6},
		{"bad network", base + "mode = \"sandbox\"\n[sandbox]\nnetwork = \"bridge\"\n", "sandbox.network", 6},
		{"group root without user root", base + "mode = \"sandbox\"\n[sandbox]\ngroup = \"root\"\n", "sandbox.group", 6},
		{"gid 0 for another user", base + "mode = \"sandbox\"\n[sandbox]\nuser = \"nobody\"\ngroup = \"0\"\n", "sandbox.group", 7},
		{"gid 0 written 00 for another user", base + "mode = \"sandbox\"\n[sandbox]\nuser = \"1000\"\ngroup = \"00\"\n", "sandbox.group", 7},
		{"uid (uid_t)-1", base + "mode = \"sandbox\"\n[sandbox]\nuser = \"4294967295\"\n", "sandbox.user", 6},
		{"uid beyond 32 bits", base + "mode = \"sandbox\"\n[sandbox]\nuser = \"4294967296\"\n", "sandbox.user", 6},
		{"gid (uid_t)-1", base + "mode = \"sandbox\"\n[sandbox]\nuser = \"1000\"\ngroup = \"4294967295\"\n", "sandbox.group", 7},
		{"negative memory", base + "[resources]\nmemory = -5\n", "resources.memory", 5},
		{"negative cpu", base + "[resources]\ncpu = -1.0\n", "resources.cpu", 5},
		{"negative pids", base + "[resources]\npids = -1\n", "resources.pids", 5},
		{"bad policy", base + "[restart]\npolicy = \"sometimes\"\n", "restart.policy", 5},
		{"backoff inverted", base + "[restart]\ninitial_backoff = \"10s\"\nmax_backoff = \"1s\"\n", "restart.max_backoff", 6},
		{"huge backoff", base + "[restart]\nmax_backoff = \"1000h\"\n", "restart.max_backoff", 5},
		{"bad jitter", base + "[restart]\njitter = 2.0\n", "restart.jitter", 5},
		{"negative max failures", base + "[restart]\nmax_failures = -3\n", "restart.max_failures", 5},
		{"bad health type", base + "[health]\ntype = \"grpc\"\n", "health.type", 5},
		{"http health without port", base + "[health]\ntype = \"http\"\n", "health.port", 4},
		{"http health path with a control character", base + "[health]\ntype = \"http\"\nport = 80\npath = \"/a\\nb\"\n", "health.path", 7},
		{"http health path with a bad escape", base + "[health]\ntype = \"http\"\nport = 80\npath = \"/ready%zz\"\n", "health.path", 7},
		{"bad health port", base + "[health]\ntype = \"tcp\"\nport = 70000\n", "health.port", 6},
		{"zero health failures", base + "[health]\nfailures = 0\n", "health.failures", 5},
		{"negative restart after", base + "[health]\ntype = \"tcp\"\nport = 80\nrestart_after = -1\n", "health.restart_after", 7},
		{"huge restart after", base + "[health]\ntype = \"tcp\"\nport = 80\nrestart_after = 1001\n", "health.restart_after", 7},
		{"restart after without a check", base + "[health]\nrestart_after = 3\n", "health.restart_after", 5},
		{"file with dotdot", base + "[[files]]\nobject = \"x\"\npath = \"../etc/passwd\"\n", "files[0].path", 6},
		{"file absolute", base + "[[files]]\nobject = \"x\"\npath = \"ok\"\n[[files]]\nobject = \"y\"\npath = \"/etc/passwd\"\n", "files[1].path", 9},
		{"file duplicate path", base + "[[files]]\nobject = \"x\"\npath = \"a/b\"\n[[files]]\nobject = \"y\"\npath = \"a//b\"\n", "files[1].path", 9},
		{"file inside a file", base + "[[files]]\nobject = \"x\"\npath = \"conf\"\n[[files]]\nobject = \"y\"\npath = \"conf/x\"\n", "files[1].path", 9},
		{"file over a file's directory", base + "[[files]]\nobject = \"x\"\npath = \"conf/x\"\n[[files]]\nobject = \"y\"\npath = \"./conf\"\n", "files[1].path", 9},
		{"secret inside a file", base + "[[files]]\nobject = \"x\"\npath = \"conf\"\n[[secrets]]\nname = \"s\"\nfile = \"conf//token\"\n", "secrets[0].file", 9},
		{"secret file shared with a file", base + "[[files]]\nobject = \"x\"\npath = \"a/b\"\n[[secrets]]\nname = \"s\"\nfile = \"a/./b\"\n", "secrets[0].file", 9},
		{"secret env and file", base + "[[secrets]]\nname = \"s\"\nenv = \"S\"\nfile = \"s\"\n", "secrets[0]", 4},
		{"secret reserved env", base + "[[secrets]]\nname = \"s\"\nenv = \"NARUN_NODE\"\n", "secrets[0].env", 6},
		{"secret file escape", base + "[[secrets]]\nname = \"s\"\nfile = \"a/../../x\"\n", "secrets[0].file", 6},
		{"env reserved", base + "[env]\nNARUN_APP = \"x\"\n", "env.NARUN_APP", 5},
		{"env bad name", base + "env = { \"A-B\" = \"x\" }\n", "env.A-B", 4},
		{"route without slash", base + "[[routes]]\npath = \"hello\"\n", "routes[0].path", 5},
		{"route bad match", base + "[[routes]]\npath = \"/\"\nmatch = \"regex\"\n", "routes[0].match", 6},
		{"route wildcard service", base + "[[routes]]\npath = \"/\"\nservice = \"a.>\"\n", "routes[0].service", 6},
		{"http port negative", base + "[http]\nport = -80\n", "http.port", 5},
		{"http port shared by replicas", base + "replicas = 2\n[http]\nport = 8080\n", "http.port", 6},
		{"bad stop signal", base + "stop_signal = \"SIGFOO\"\n", "stop_signal", 4},
		{"huge stop timeout", base + "stop_timeout = \"48h\"\n", "stop_timeout", 4},
		{"zero stop timeout", base + "stop_timeout = \"0s\"\n", "stop_timeout", 4},
		{"zero start grace", base + "[health]\nstart_grace = \"0s\"\n", "health.start_grace", 5},
		{"huge min healthy", base + "[health]\nmin_healthy = \"2h\"\n", "health.min_healthy", 5},
		{"negative min healthy", base + "[health]\nmin_healthy = \"-1s\"\n", "health.min_healthy", 5},
		{"zero reset after", base + "[restart]\nreset_after = \"0ms\"\n", "restart.reset_after", 5},
		{"unknown arch", base + "[binaries.mips]\nobject = \"x\"\nsha256 = \"" + strings.Repeat("0", 64) + "\"\n", "binaries.mips", 4},
		{"bad digest", base + "[binaries.amd64]\nobject = \"x\"\nsha256 = \"xyz\"\n", "binaries.amd64.sha256", 6},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("spec accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, `"`+tc.key+`"`) {
				t.Errorf("error does not name key %q: %s", tc.key, msg)
			}
			prefix := "app.toml:"
			if tc.line > 0 {
				prefix += strconv.Itoa(tc.line) + ":"
			}
			if !strings.HasPrefix(msg, prefix) {
				t.Errorf("error does not start with %q: %s", prefix, msg)
			}
			var fe *FieldError
			if errors.As(err, &fe) && tc.line > 0 && fe.Line != tc.line {
				t.Errorf("line %d, want %d", fe.Line, tc.line)
			}
		})
	}
}

// A value of the wrong kind is refused in TOML's words, on its line and
// key: what the key wants and what it got, never the Go types of the spec.
func TestTypeErrorsSayWhatTheKeyWants(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\n"
	for _, tc := range []struct {
		name, src, want string
	}{
		{"string", base + "nodes = [\"n1\"]\nmode = 1\n", `app.toml:4: key "mode": want a string, got an integer`},
		{"integer", base + "nodes = [\"n1\"]\nreplicas = \"two\"\n", `app.toml:4: key "replicas": want an integer, got a string`},
		{"float", base + "nodes = [\"n1\"]\n[resources]\ncpu = \"half\"\n", `app.toml:5: key "resources.cpu": want a number, got a string`},
		{"bool", base + "nodes = [\"n1\"]\n[[routes]]\npath = \"/\"\nstrip_prefix = 1\n", `app.toml:6: key "routes.strip_prefix": want true or false, got an integer`},
		{"list", base + "nodes = \"x\"\n", `app.toml:3: key "nodes": want a list of strings, got a string`},
		{"list element", base + "nodes = [\"n1\", 2]\n", `app.toml:3: key "nodes": want a list of strings, got a list holding an integer`},
		{"table", base + "nodes = [\"n1\"]\nrestart = \"always\"\n", `app.toml:4: key "restart": want a table, got a string`},
		{"table of strings", base + "nodes = [\"n1\"]\n[env]\nA = 1\n", `app.toml:5: key "env.A": want a string, got an integer`},
		{"table of strings, a string", base + "nodes = [\"n1\"]\nenv = \"A=1\"\n", `app.toml:4: key "env": want a table of strings, got a string`},
		{"table of strings, a list", base + "nodes = [\"n1\"]\nlabels = [\"edge\"]\n", `app.toml:4: key "labels": want a table of strings, got a list`},
		{"array of tables", base + "nodes = [\"n1\"]\nfiles = \"conf\"\n", `app.toml:4: key "files": want a list of tables, got a string`},
		{"duration", base + "nodes = [\"n1\"]\nstop_timeout = 30\n", `app.toml:4: key "stop_timeout": want a duration such as "30s", got an integer`},
		{"size", base + "nodes = [\"n1\"]\n[resources]\nmemory = 1.5\n", `app.toml:5: key "resources.memory": want a size such as "64MiB" or a number of bytes, got a float`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("spec accepted")
			}
			if err.Error() != tc.want {
				t.Errorf("error\n %s\nwant\n %s", err, tc.want)
			}
		})
	}
}

// The runner and the sandbox own some names of the instance directory; a
// file or secret there would be overwritten or unreadable.
func TestReservedInstancePaths(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	file := func(p string) string { return base + "[[files]]\nobject = \"x\"\npath = \"" + p + "\"\n" }
	secret := func(p string) string { return base + "[[secrets]]\nname = \"s\"\nfile = \"" + p + "\"\n" }
	tests := []struct {
		name, src, key, reason string
	}{
		{"pid file", file("pid"), "files[0].path", "record of the instance's process"},
		{"pid as a directory", file("./pid/x"), "files[0].path", "record of the instance's process"},
		{"under data", file("data/app.conf"), "files[0].path", "data/ is the app's writable directory"},
		{"tmp itself", file("tmp"), "files[0].path", "private /tmp"},
		{"secret under run", secret("run//token"), "secrets[0].file", "bridge sockets"},
		{"secret under data in sandbox mode", "mode = \"sandbox\"\n" + secret("data/token"), "secrets[0].file", "unreadable"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(tt.src))
			if err == nil {
				t.Fatal("spec accepted")
			}
			if msg := err.Error(); !strings.Contains(msg, `key "`+tt.key+`"`) || !strings.Contains(msg, tt.reason) {
				t.Errorf("want key %q and %q in: %s", tt.key, tt.reason, msg)
			}
		})
	}
	for _, ok := range []string{"pidfile", "database/x", "conf/pid", "conf/data/x", "runner.toml"} {
		if _, err := Parse("app.toml", []byte(file(ok))); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}

// A path conflict names both keys, so the operator sees which two clash.
func TestPathConflictNamesBothKeys(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n[[secrets]]\nname = \"s\"\nfile = \"conf/token\"\n[[files]]\nobject = \"x\"\npath = \"conf\"\n[[files]]\nobject = \"y\"\npath = \"confx/token\"\n"
	_, err := Parse("app.toml", []byte(src))
	want := `app.toml:6: key "secrets[0].file": path "conf/token" is inside "conf", which files[0].path places as a file`
	if err == nil || err.Error() != want {
		t.Fatalf("error = %v\nwant %s", err, want)
	}
}

// Parse refuses what a deploy must not store; ParseStored lets through a
// spec an earlier ctl stored that only breaks the deploy-time rules, and
// reports them, and refuses what nothing can run in either mode.
func TestParseModes(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	file := func(p string) string { return "[[files]]\nobject = \"x\"\npath = \"" + p + "\"\n" }
	tests := []struct {
		name, src, key string
		line           int
		// deployOnly: ParseStored accepts it, reporting key as outdated.
		deployOnly bool
	}{
		{"zero stop timeout", "stop_timeout = \"0s\"\n", "stop_timeout", 4, true},
		{"zero start grace", "[health]\nstart_grace = \"0s\"\n", "health.start_grace", 5, true},
		{"zero reset after", "[restart]\nreset_after = \"0s\"\n", "restart.reset_after", 5, true},
		{"zero http port", "[http]\nport = 0\n", "http.port", 5, true},
		{"one pid", "[resources]\npids = 1\n", "resources.pids", 5, true},
		{"http port on the bridged NATS", "mode = \"sandbox\"\n[sandbox]\nnetwork = \"none\"\n[http]\nport = 4222\n", "http.port", 8, true},
		{"health port on the bridged NATS", "mode = \"sandbox\"\n[sandbox]\nnetwork = \"isolated\"\n[health]\ntype = \"tcp\"\nport = 4222\n", "health.port", 9, true},
		{"zero health port", "[http]\nport = 8080\n[health]\ntype = \"tcp\"\nport = 0\n", "health.port", 8, true},
		{"file at a reserved path", file("pid"), "files[0].path", 6, true},
		{"secret under a reserved directory", "[[secrets]]\nname = \"s\"\nfile = \"data/token\"\n", "secrets[0].file", 6, true},
		{"file inside a file", file("conf") + file("conf/x"), "files[1].path", 9, true},
		{"group root for another user", "mode = \"sandbox\"\n[sandbox]\ngroup = \"root\"\n", "sandbox.group", 6, true},
		{"writable cgroup hierarchy", "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/sys/fs/cgroup/\"\nmode = \"rw\"\n", "sandbox.paths[0]", 5, true},
		{"writable cgroup", "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/x\"\nmode = \"r\"\n[[sandbox.paths]]\npath = \"/sys/fs/cgroup/unified/a\"\nmode = \"w\"\n", "sandbox.paths[1]", 8, true},
		{"writable directory holding the cgroup hierarchies", "mode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/sys\"\nmode = \"rwx\"\n", "sandbox.paths[0]", 5, true},
		{"root writing the kernel's settings", "mode = \"sandbox\"\n[sandbox]\nuser = \"root\"\n[[sandbox.paths]]\npath = \"/proc/sys/kernel\"\nmode = \"rw\"\n", "sandbox.paths[0]", 7, true},
		{"root writing a directory holding /proc", "mode = \"sandbox\"\n[sandbox]\nuser = \"0\"\n[[sandbox.paths]]\npath = \"/\"\nmode = \"w\"\n", "sandbox.paths[0]", 7, true},
		{"root writing sysfs", "mode = \"sandbox\"\n[sandbox]\nuser = \"root\"\n[[sandbox.paths]]\npath = \"/sys/kernel/mm\"\nmode = \"w\"\n", "sandbox.paths[0]", 7, true},
		{"env not a table", "env = \"A=1\"\n", "env", 4, true},
		{"huge stop timeout", "stop_timeout = \"48h\"\n", "stop_timeout", 4, false},
		{"negative memory", "[resources]\nmemory = -5\n", "resources.memory", 5, false},
		{"sandbox table in exec mode", "[sandbox]\nnetwork = \"none\"\n", "sandbox", 4, false},
		{"duplicate file path", file("conf") + file("./conf"), "files[1].path", 9, false},
		{"file outside the instance dir", file("../x"), "files[0].path", 6, false},
		{"zero initial backoff", "[restart]\ninitial_backoff = \"0s\"\n", "restart.initial_backoff", 5, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := []byte(base + tt.src)
			want := "a.toml:" + strconv.Itoa(tt.line) + ": key \"" + tt.key + "\": "
			_, err := Parse("a.toml", src)
			if err == nil || !strings.HasPrefix(err.Error(), want) {
				t.Errorf("Parse: %v, want an error starting %q", err, want)
			}
			app, outdated, err := ParseStored("a.toml", src)
			switch {
			case !tt.deployOnly && (err == nil || !strings.HasPrefix(err.Error(), want)):
				t.Errorf("ParseStored: %v, want an error starting %q", err, want)
			case !tt.deployOnly && (app != nil || outdated != nil):
				t.Errorf("ParseStored refused the spec but returned %v and %v", app, outdated)
			case tt.deployOnly && err != nil:
				t.Errorf("ParseStored: %v", err)
			case tt.deployOnly && (app == nil || outdated == nil || !strings.HasPrefix(outdated.Error(), want)):
				t.Errorf("ParseStored: app %v, outdated %v, want it starting %q", app, outdated, want)
			}
		})
	}
	app, outdated, err := ParseStored("a.toml", []byte(base))
	if app == nil || outdated != nil || err != nil {
		t.Errorf("a spec that breaks nothing: app %v, outdated %v, err %v", app, outdated, err)
	}
}

// A stored spec that breaks deploy-time rules keeps what it says, which
// the runner reads as it did before the rules: a zero duration for its
// default, a file placed where the runner then refuses it.
func TestParseStoredKeepsValues(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nstop_timeout = \"0s\"\n[[files]]\nobject = \"x\"\npath = \"pid\"\n"
	app, outdated, err := ParseStored("a.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if app.StopTimeout != 0 || len(app.Files) != 1 || app.Files[0].Path != "pid" {
		t.Errorf("stop_timeout %v, files %+v", app.StopTimeout.D(), app.Files)
	}
	if n := len(strings.Split(outdated.Error(), "\n")); n != 2 {
		t.Errorf("%d outdated problems, want 2: %v", n, outdated)
	}
	// app restart of such a spec is no deploy: it is not refused.
	restarted, err := SetRestartedAt("a.toml", []byte(src), time.Unix(1e9, 0))
	if err != nil {
		t.Fatalf("restart: %v", err)
	}
	if _, _, err := ParseStored("a.toml", restarted); err != nil {
		t.Errorf("restarted spec: %v", err)
	}
}

// A spec without a name says the name is required, as it says of the
// version, not that a name it does not have is empty.
func TestMissingNameIsRequired(t *testing.T) {
	_, err := Parse("app.toml", []byte("version = \"1\"\nnodes = [\"n1\"]\n"))
	if want := `app.toml: key "name": is required`; err == nil || err.Error() != want {
		t.Errorf("error %v, want %s", err, want)
	}
}

// A typo of a key, and a top-level key written after a table (TOML reads
// it as the table's), are named with the key meant.
func TestUnknownKeysSuggestTheKeyMeant(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nreplica = 2\n[helth]\ntype = \"none\"\n" +
		"[restart]\npolciy = \"never\"\n[[routes]]\npath = \"/a/\"\nreplicas = 2\n"
	_, err := Parse("app.toml", []byte(src))
	if err == nil {
		t.Fatal("parsed a spec with unknown keys")
	}
	want := []string{
		`app.toml:4: unknown key "replica" (did you mean "replicas"?)`,
		`app.toml:5: unknown key "helth" (did you mean "health"?)`,
		`app.toml:8: unknown key "restart.polciy" (did you mean "restart.policy"?)`,
		`app.toml:11: unknown key "routes.replicas" (did you mean the top-level "replicas"? write it above the first table)`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// Keys are case-sensitive: the decoder would take `Replicas` for replicas,
// and `[http] Port = 0` past the rule for port 0. The keys of [env] are
// the app's own.
func TestKeysAreCaseSensitive(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	src := base + "Replicas = 2\nREPLICAS = 3\n[Health]\nType = \"none\"\n[http]\nPort = 0\n" +
		"[env]\nlog_Level = \"x\"\n[[files]]\nObject = \"o\"\npath = \"conf\"\n"
	_, err := Parse("app.toml", []byte(src))
	if err == nil {
		t.Fatal("parsed a spec with miscased keys")
	}
	want := []string{
		`app.toml:4: unknown key "Replicas" (did you mean "replicas"?)`,
		`app.toml:5: unknown key "REPLICAS" (did you mean "replicas"?)`,
		`app.toml:6: unknown key "Health" (did you mean "health"?)`,
		`app.toml:7: unknown key "Health.Type" (did you mean "health.type"?)`,
		`app.toml:9: unknown key "http.Port" (did you mean "http.port"?)`,
		`app.toml:13: unknown key "files.Object" (did you mean "files.object"?)`,
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}

	a, err := Parse("app.toml", []byte(base+"[env]\nlog_Level = \"x\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Env["log_Level"] != "x" {
		t.Errorf("env = %v, want log_Level = x", a.Env)
	}
}

// A stored spec ran with its miscased keys taken for their fields: it
// keeps running so, and only a redeploy must spell them right.
func TestParseStoredTakesMiscasedKeys(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nReplicas = 2\n"
	app, outdated, err := ParseStored("a.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if app.Replicas != 2 {
		t.Errorf("replicas = %d, want 2", app.Replicas)
	}
	want := `a.toml:4: key "Replicas": keys are case-sensitive (did you mean "replicas"?)`
	if outdated == nil || outdated.Error() != want {
		t.Errorf("outdated = %v, want %s", outdated, want)
	}
}

// A spec of a thousand bad entries names the first problems and counts
// the rest.
func TestManyProblemsAreCounted(t *testing.T) {
	var b strings.Builder
	b.WriteString("name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\n")
	for i := range 1000 {
		fmt.Fprintf(&b, "[[files]]\nobject = \"o\"\npath = \"../x%d\"\n", i)
	}
	_, err := Parse("a.toml", []byte(b.String()))
	if err == nil {
		t.Fatal("parsed a spec of bad paths")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != maxErrors+1 || lines[len(lines)-1] != "a.toml: 950 more problems" {
		t.Errorf("%d lines, last %q; want %d and the count of the rest", len(lines), lines[len(lines)-1], maxErrors+1)
	}
}

// The problems named past the limit are the first ones in the file, in
// line order, whatever order the rules find them in: [env] is checked in
// the order of its names, NARUN_10 before NARUN_2.
func TestManyProblemsAreTheFirstLines(t *testing.T) {
	var b strings.Builder
	b.WriteString("name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\n[env]\n")
	for i := 1; i <= maxErrors+5; i++ {
		fmt.Fprintf(&b, "NARUN_%d = \"x\"\n", i)
	}
	_, err := Parse("a.toml", []byte(b.String()))
	if err == nil {
		t.Fatal("parsed a spec of reserved variables")
	}
	var want []string
	for i := 1; i <= maxErrors; i++ {
		want = append(want, fmt.Sprintf(`a.toml:%d: key "env.NARUN_%d": NARUN_ variables are set by the runner`, i+4, i))
	}
	want = append(want, "a.toml: 5 more problems")
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

func TestObjectNames(t *testing.T) {
	for _, ok := range []string{"conf", "app.conf", "tls_key-2", "a"} {
		if err := ValidObjectName(ok); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".hidden", "trailing.", "a..b", "a/b", "../x", "a b", "é", strings.Repeat("x", 200)} {
		if ValidObjectName(bad) == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestHealthServiceDefault(t *testing.T) {
	a, err := Parse("a.toml", []byte("name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\n[[routes]]\npath = \"/api/\"\nservice = \"api.v1\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Health.Type != HealthMicro || a.Health.Service != "api.v1" {
		t.Errorf("health: %+v", a.Health)
	}
}

func TestAllProblemsReported(t *testing.T) {
	_, err := Parse("app.toml", []byte("name = \"a.b\"\nversion = \"1\"\nnodes = [\"n\"]\nreplicas = -1\nmode = \"x\"\n"))
	if err == nil {
		t.Fatal("accepted")
	}
	for _, key := range []string{`"name"`, `"replicas"`, `"mode"`} {
		if !strings.Contains(err.Error(), key) {
			t.Errorf("missing %s in %v", key, err)
		}
	}
}

func TestReplicasOn(t *testing.T) {
	a, err := Parse("a.toml", []byte("name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nlabels = { role = \"edge\", zone = \"b\" }\nreplicas = 3\n"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		node   string
		labels map[string]string
		want   int
	}{
		{"n1", nil, 3},
		{"n2", nil, 0},
		{"n2", map[string]string{"role": "edge"}, 0},
		{"n2", map[string]string{"role": "edge", "zone": "b"}, 3},
		{"n2", map[string]string{"role": "edge", "zone": "c"}, 0},
	}
	for _, tc := range tests {
		if got := a.ReplicasOn(tc.node, tc.labels); got != tc.want {
			t.Errorf("ReplicasOn(%s, %v) = %d, want %d", tc.node, tc.labels, got, tc.want)
		}
	}
}

func TestFingerprint(t *testing.T) {
	digest := func(c byte) string { return strings.Repeat(string(c), 64) }
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	bins := "[binaries.amd64]\nobject = \"a/1/linux-amd64\"\nsha256 = \"" + digest('a') + "\"\n" +
		"[binaries.arm64]\nobject = \"a/1/linux-arm64\"\nsha256 = \"" + digest('b') + "\"\n"
	fp := func(src, arch string) string {
		t.Helper()
		a, err := Parse("a.toml", []byte(src))
		if err != nil {
			t.Fatal(err)
		}
		return a.Fingerprint(arch)
	}
	ref := fp(base+bins, "amd64")
	same := []struct{ name, src string }{
		{"replicas", base + "replicas = 5\n" + bins},
		{"routes", base + "[[routes]]\npath = \"/x/\"\n" + bins},
		{"restart", base + "[restart]\nmax_failures = 3\n" + bins},
		{"stop timeout", base + "stop_timeout = \"1s\"\n" + bins},
		{"other arch binary", base + "[binaries.amd64]\nobject = \"a/1/linux-amd64\"\nsha256 = \"" + digest('a') + "\"\n[binaries.arm64]\nobject = \"a/1/linux-arm64\"\nsha256 = \"" + digest('c') + "\"\n"},
		{"other node list", "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\", \"n2\"]\n" + bins},
	}
	for _, tc := range same {
		if got := fp(tc.src, "amd64"); got != ref {
			t.Errorf("%s changed the fingerprint", tc.name)
		}
	}
	differ := []struct{ name, src string }{
		{"args", base + "args = [\"-v\"]\n" + bins},
		{"env", base + "env = { A = \"1\" }\n" + bins},
		{"version", "name = \"a\"\nversion = \"2\"\nnodes = [\"n1\"]\n" + bins},
		{"own binary", base + "[binaries.amd64]\nobject = \"a/1/linux-amd64\"\nsha256 = \"" + digest('d') + "\"\n"},
		{"restart", restarted(t, base+bins)},
	}
	for _, tc := range differ {
		if got := fp(tc.src, "amd64"); got == ref {
			t.Errorf("%s did not change the fingerprint", tc.name)
		}
	}
	sandboxed := base + "mode = \"sandbox\"\n"
	if fp(sandboxed+bins, "amd64") == fp(sandboxed+"[resources]\nmemory = \"64MiB\"\n"+bins, "amd64") {
		t.Error("resources did not change the fingerprint")
	}
}

func TestWithBinaries(t *testing.T) {
	bins := map[string]Binary{
		"arm64": {Object: "hello/1.0.0/linux-arm64", SHA256: strings.Repeat("1", 64)},
		"amd64": {Object: "hello/1.0.0/linux-amd64", SHA256: strings.Repeat("2", 64)},
	}
	out, err := WithBinaries("hello.toml", []byte(smallest), bins)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(out), smallest) {
		t.Error("operator's spec not kept verbatim")
	}
	a, err := Parse("stored", out)
	if err != nil {
		t.Fatal(err)
	}
	if a.Binaries["amd64"] != bins["amd64"] || a.Binaries["arm64"] != bins["arm64"] {
		t.Errorf("binaries: %+v", a.Binaries)
	}
	if _, err := WithBinaries("again", out, bins); err == nil || !strings.Contains(err.Error(), `"binaries"`) {
		t.Errorf("second [binaries] accepted: %v", err)
	}
}

// A rewrite of a signed spec invalidates its signature and, for
// WithBinaries, would bury the trailer above the new tables: both return
// the unsigned result for ctl to sign, never a stale trailer.
func TestRewritesDropSignature(t *testing.T) {
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	signed := key.Sign([]byte(smallest))
	bins := map[string]Binary{"arm64": {Object: "hello/1.0.0/linux-arm64", SHA256: strings.Repeat("1", 64)}}
	withBins, err := WithBinaries("hello.toml", signed, bins)
	if err != nil {
		t.Fatal(err)
	}
	restarted, err := SetRestartedAt("hello.toml", key.Sign(withBins), time.Unix(200, 0))
	if err != nil {
		t.Fatal(err)
	}
	for name, out := range map[string][]byte{"WithBinaries": withBins, "SetRestartedAt": restarted} {
		if strings.Contains(string(out), "narun-signature") {
			t.Errorf("%s kept the trailer:\n%s", name, out)
		}
	}
	if !strings.HasPrefix(string(withBins), smallest) {
		t.Errorf("WithBinaries did not keep the spec:\n%s", withBins)
	}
}

func TestSetRestartedAt(t *testing.T) {
	const when = `"1970-01-01T00:03:20Z"`
	tests := []struct {
		name string
		src  string
		want string // the line that must carry the new time
	}{
		{"none yet", smallest, "restarted_at = " + when},
		{"first line", "restarted_at = \"1970-01-01T00:01:40Z\"\n" + smallest, "restarted_at = " + when},
		{"after a comment", "# hello, deployed by CI\nrestarted_at = \"1970-01-01T00:01:40Z\"\n" + smallest, "restarted_at = " + when},
		{"after other keys", "name = \"hello\"\nversion = \"1.0.0\"\n  restarted_at=\"1970-01-01T00:01:40Z\" # by hand\nnodes = [\"node-1\"]\n[[routes]]\npath = \"/hello/\"\n", "restarted_at = " + when},
		{"quoted key, no final newline", "name = \"hello\"\nversion = \"1.0.0\"\nnodes = [\"node-1\"]\n\"restarted_at\" = \"1970-01-01T00:01:40Z\"", "restarted_at = " + when},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := SetRestartedAt("app.toml", []byte(tt.src), time.Unix(200, 0))
			if err != nil {
				t.Fatal(err)
			}
			a, err := Parse("stored", out)
			if err != nil {
				t.Fatalf("result does not parse: %v\n%s", err, out)
			}
			if a.RestartedAt != "1970-01-01T00:03:20Z" || strings.Count(string(out), "restarted_at") != 1 || !strings.Contains(string(out), tt.want) {
				t.Errorf("restarted_at not set once to %s:\n%s", when, out)
			}
			orig, err := Parse("orig", []byte(tt.src))
			if err != nil {
				t.Fatal(err)
			}
			if orig.Fingerprint("amd64") == a.Fingerprint("amd64") {
				t.Error("restart did not change the fingerprint")
			}
		})
	}
}

// A restarted_at that cannot be rewritten in place is an error, never a
// spec that runners refuse or one that runs something else.
func TestSetRestartedAtRefuses(t *testing.T) {
	tests := []struct{ name, src string }{
		{"invalid spec", "name = \"a\"\n"},
		{"value on two lines", "name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\nrestarted_at = \"\"\"\n1970-01-01T00:01:40Z\"\"\"\n"},
		{"look-alike inside a string", "name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\nargs = [\"\"\"\nrestarted_at = \"x\"\n\"\"\"]\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := SetRestartedAt("app.toml", []byte(tt.src), time.Unix(200, 0))
			if err == nil {
				t.Fatalf("accepted:\n%s", out)
			}
			if !strings.HasPrefix(err.Error(), "app.toml") {
				t.Errorf("error does not name the file: %v", err)
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(smallest))
	f.Add([]byte("name = \"a\"\nversion = \"1\"\nlabels = { r = \"x\" }\nmode = \"sandbox\"\n[[sandbox.paths]]\npath = \"/x\"\nmode = \"rw\"\n[[files]]\nobject = \"o\"\npath = \"p\"\n"))
	f.Add([]byte("[restart]\nmax_backoff = \"-1s\"\n[[routes]]\n[[routes]]\npath = 3\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		// A runner reads back what any client that can write narun-apps
		// stored: what it refuses, it names; what a deploy accepts, it
		// runs, with nothing outdated.
		stored, outdated, storedErr := ParseStored("f.toml", data)
		if storedErr != nil && !strings.HasPrefix(storedErr.Error(), "f.toml") {
			t.Fatalf("error does not name the file: %v", storedErr)
		}
		if storedErr == nil && stored == nil {
			t.Fatal("ParseStored returned neither a spec nor an error")
		}
		a, err := Parse("f.toml", data)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.toml") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if storedErr != nil || outdated != nil {
			t.Fatalf("a deploy accepts what a runner refuses: %v, outdated %v", storedErr, outdated)
		}
		// Whatever parses must parse again identically once stored.
		if a.Fingerprint("amd64") == "" {
			t.Fatal("empty fingerprint")
		}
		if _, err := Parse("again", data); err != nil {
			t.Fatalf("second parse: %v", err)
		}
	})
}

// An oversized spec is refused before decoding, so ctl uploads nothing for
// it and the runner never tries to hold it.
func TestOversizedSpecRefused(t *testing.T) {
	big := smallest + "# " + strings.Repeat("x", MaxSize) + "\n"
	_, err := Parse("big.toml", []byte(big))
	if err == nil || !strings.Contains(err.Error(), "big.toml") || !strings.Contains(err.Error(), "at most 256 KiB") {
		t.Fatalf("want a size error naming the file, got %v", err)
	}
}

// `hostname` prints the full name on some systems; a runner's default id is
// its first label, and the error says so.
// A label name the selector refuses says what a name may hold, so the
// fix does not need the reference.
func TestLabelNameErrorSaysWhatIsWanted(t *testing.T) {
	_, err := Parse("app.toml", []byte("name = \"a\"\nversion = \"1\"\nlabels = { \"-zone\" = \"x\" }\n"))
	want := `app.toml:3: key "labels.-zone": label name "-zone": want a letter or digit, then letters, digits, '.', '_', '/' or '-', at most 128 characters`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

// A version made only of allowed characters but starting with one that
// may not start it (".1", "-rc1") is told what is wrong with it, which a
// list of the characters alone does not say.
func TestVersionErrorSaysWhatIsWanted(t *testing.T) {
	_, err := Parse("app.toml", []byte("name = \"a\"\nversion = \".1\"\nnodes = [\"n1\"]\n"))
	want := `app.toml:2: key "version": want a letter or digit, then letters, digits, '.', '_', '+' or '-', at most 64 characters, got ".1"`
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("error = %v, want %s", err, want)
	}
}

// The memory limit's documented range, 4MiB..1TiB, can be written with the
// unit it is documented in.
func TestMemoryLimitInTiB(t *testing.T) {
	base := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nmode = \"sandbox\"\n[resources]\n"
	a, err := Parse("app.toml", []byte(base+"memory = \"1TiB\"\n"))
	if err != nil || a.Resources.Memory != 1<<40 {
		t.Fatalf("memory = \"1TiB\": %v", err)
	}
	_, err = Parse("app.toml", []byte(base+"memory = \"2TiB\"\n"))
	if want := `key "resources.memory": want 0 (no limit) or 4MiB..1TiB`; err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("memory = \"2TiB\": %v, want %s", err, want)
	}
}

func TestNodeIDFromFullHostName(t *testing.T) {
	_, err := Parse("app.toml", []byte("name = \"a\"\nversion = \"1\"\nnodes = [\"edge-01.example.com\"]\n"))
	if err == nil || !strings.Contains(err.Error(), `the first label of its host name, "edge-01"`) {
		t.Fatalf("error = %v, want the hint to use \"edge-01\"", err)
	}
}

// Replicas with an [http] port work when each has its own network
// namespace.
func TestHTTPPortReplicasInOwnNetwork(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nreplicas = 3\nmode = \"sandbox\"\n[sandbox]\nnetwork = \"isolated\"\n[http]\nport = 8080\n"
	if _, err := Parse("app.toml", []byte(src)); err != nil {
		t.Fatal(err)
	}
}

func restarted(t *testing.T, src string) string {
	t.Helper()
	out, err := SetRestartedAt("a.toml", []byte(src), time.Unix(1, 0))
	if err != nil {
		t.Fatal(err)
	}
	return string(out)
}

const withFiles = `name = "hello"
version = "1.0.0"
nodes = ["node-1"]
[[files]]
object = "app.conf"
path = "conf/app.conf"
[[files]]
object = "ca"
path = "ca.pem"
`

func TestFileDigestsRules(t *testing.T) {
	tests := []struct{ name, table, want string }{
		{"unused object", "[file_digests]\n\"app.conf\" = \"" + strings.Repeat("a", 64) + "\"\nca = \"" + strings.Repeat("c", 64) + "\"\n\"other\" = \"" + strings.Repeat("b", 64) + "\"\n", `a.toml:14: key "file_digests.other": no [[files]] entry uses object "other"`},
		{"not hex", "[file_digests]\n\"app.conf\" = \"" + strings.Repeat("A", 64) + "\"\nca = \"" + strings.Repeat("c", 64) + "\"\n", `a.toml:12: key "file_digests.app.conf": want 64 lower-case hex digits`},
		{"object left out", "[file_digests]\n\"app.conf\" = \"" + strings.Repeat("a", 64) + "\"\n", `a.toml:8: key "files[1].object": object "ca" has no pin in [file_digests]: pin every [[files]] object, or remove [file_digests] for narun ctl deploy to write it`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse("a.toml", []byte(withFiles+"\n"+tt.table))
			if err == nil || err.Error() != tt.want {
				t.Errorf("got %v, want %s", err, tt.want)
			}
		})
	}
	// Stored by an earlier narun ctl, a spec with an object left out
	// still runs, and is reported as outdated.
	src := withFiles + "\n[file_digests]\n\"app.conf\" = \"" + strings.Repeat("a", 64) + "\"\n"
	a, outdated, err := ParseStored("a.toml", []byte(src))
	if err != nil || a == nil || outdated == nil || !strings.Contains(outdated.Error(), `key "files[1].object": object "ca" has no pin`) {
		t.Errorf("ParseStored: outdated %v, err %v", outdated, err)
	}
}

func TestSetFileDigests(t *testing.T) {
	bins := map[string]Binary{"arm64": {Object: "hello/1.0.0/linux-arm64", SHA256: strings.Repeat("1", 64)}}
	withBins, err := WithBinaries("hello.toml", []byte(withFiles), bins)
	if err != nil {
		t.Fatal(err)
	}
	first := map[string]string{"app.conf": strings.Repeat("a", 64), "ca": strings.Repeat("b", 64)}
	pinned, err := SetFileDigests("hello.toml", withBins, first)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(pinned), string(withBins)) {
		t.Errorf("spec not kept before the table:\n%s", pinned)
	}
	a, err := Parse("stored", pinned)
	if err != nil {
		t.Fatal(err)
	}
	if !maps.Equal(a.FileDigests, first) {
		t.Errorf("file_digests = %v, want %v", a.FileDigests, first)
	}

	// app restart pins what the store holds now: the table is replaced,
	// not added again, and the same digests give the same bytes.
	key, err := signing.Generate()
	if err != nil {
		t.Fatal(err)
	}
	second := map[string]string{"app.conf": strings.Repeat("c", 64), "ca": strings.Repeat("b", 64)}
	replaced, err := SetFileDigests("hello.toml", key.Sign(pinned), second)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(replaced), "narun-signature") {
		t.Errorf("trailer kept:\n%s", replaced)
	}
	if n := strings.Count(string(replaced), "[file_digests]"); n != 1 {
		t.Errorf("%d [file_digests] tables:\n%s", n, replaced)
	}
	if a, err = Parse("stored", replaced); err != nil || !maps.Equal(a.FileDigests, second) {
		t.Errorf("file_digests = %v (%v), want %v", a.FileDigests, err, second)
	}
	again, err := SetFileDigests("hello.toml", replaced, first)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(pinned) {
		t.Errorf("replacing the table changed more than the table:\n%s\nwant:\n%s", again, pinned)
	}
	if _, err := WithBinaries("hello.toml", []byte(withFiles+"\n[file_digests]\n\"app.conf\" = \""+strings.Repeat("a", 64)+"\"\nca = \""+strings.Repeat("b", 64)+"\"\n"), bins); err == nil || !strings.Contains(err.Error(), `"file_digests"`) {
		t.Errorf("[file_digests] without [binaries] accepted: %v", err)
	}
}

// Only a table on its own is replaced: an inline one would stay beside
// the new table and make a spec no node parses.
func TestSetFileDigestsRefuses(t *testing.T) {
	inline := strings.Replace(withFiles, "[[files]]", "file_digests = { ca = \""+strings.Repeat("b", 64)+"\" }\n[[files]]", 1)
	out, err := SetFileDigests("app.toml", []byte(inline), map[string]string{"ca": strings.Repeat("c", 64)})
	if err == nil || !strings.Contains(err.Error(), `key "file_digests": cannot replace it`) {
		t.Errorf("got %v:\n%s", err, out)
	}
}

func TestFingerprintIgnoresFileDigests(t *testing.T) {
	bins := "[binaries.amd64]\nobject = \"a/1/linux-amd64\"\nsha256 = \"" + strings.Repeat("a", 64) + "\"\n"
	a, err := Parse("a.toml", []byte(withFiles+bins))
	if err != nil {
		t.Fatal(err)
	}
	b, err := Parse("a.toml", []byte(withFiles+bins+"[file_digests]\n\"app.conf\" = \""+strings.Repeat("a", 64)+"\"\nca = \""+strings.Repeat("b", 64)+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if a.Fingerprint("amd64") != b.Fingerprint("amd64") {
		t.Error("pinning the files changed the fingerprint: a deploy that only adds pins would restart every instance")
	}
}

// The fingerprint is compared across versions of narun: a runner upgraded
// before ctl, or the reverse, must compute the same one from the same spec,
// or every instance looks out of date to ctl, and an upgraded runner
// restarts them all. A change of the value (a struct tag, a field) is a
// change of that contract.
func TestFingerprintStable(t *testing.T) {
	a, err := Parse("a.toml", []byte("name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nargs = [\"-v\"]\nenv = { A = \"1\" }\n"+
		"mode = \"sandbox\"\n[resources]\nmemory = \"64MiB\"\n[http]\nport = 8080\n"+
		"[binaries.amd64]\nobject = \"a/1/linux-amd64\"\nsha256 = \""+strings.Repeat("a", 64)+"\"\n"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := a.Fingerprint("amd64"), "fc28d4582eff09e262388c696d0c3320"; got != want {
		t.Errorf("fingerprint %s, want %s", got, want)
	}
}

// [resources] hold in mode "exec" too, as MemoryMax= does on a plain
// systemd service: the instance's cgroup enforces them.
func TestExecModeTakesResources(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\nmode = \"exec\"\n[resources]\nmemory = \"64MiB\"\ncpu = 0.5\npids = 64\n"
	app, err := Parse("a.toml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	if r := app.Resources; r.Memory != 64<<20 || r.CPU != 0.5 || r.Pids != 64 {
		t.Errorf("resources %+v", r)
	}
}

// An app name starting with '-' ("-x", "--help") is taken for a flag by
// every narun ctl command that names the app, and by the commands ctl
// itself prints (app delete's `narun ctl image delete --help/1/...`):
// deploy refuses it, naming the line; a spec an earlier ctl stored with
// one still runs.
func TestNameStartingWithDash(t *testing.T) {
	for _, name := range []string{"-x", "--help", "-"} {
		src := []byte("version = \"1\"\nname = \"" + name + "\"\nnodes = [\"n1\"]\n")
		want := `a.toml:2: key "name": must not start with '-'`
		if _, err := Parse("a.toml", src); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("Parse of name %q: %v, want an error starting %q", name, err, want)
		}
		app, outdated, err := ParseStored("a.toml", src)
		if err != nil || app == nil || outdated == nil || !strings.HasPrefix(outdated.Error(), want) {
			t.Errorf("ParseStored of name %q: app %v, outdated %v, err %v; want it run, outdated starting %q", name, app, outdated, err, want)
		}
	}
	for _, name := range []string{"a-", "a--b", "_x", "0"} {
		if _, err := Parse("a.toml", []byte("name = \""+name+"\"\nversion = \"1\"\nnodes = [\"n1\"]\n")); err != nil {
			t.Errorf("name %q: %v", name, err)
		}
	}
}

// Every value of the wrong type is named, in the order of the lines: the
// decoder stopped at one of them, not the first of the file, and the
// user fixed it and redeployed only to be told of the next.
func TestTypeErrorsAllInLineOrder(t *testing.T) {
	const app = "name = \"a\"\nversion = \"1\"\nnodes = [\"n\"]\n" +
		"env = [\"A=B\"]\n" + // 4
		"args = \"--x\"\n" + // 5
		"replicas = \"2\"\n" + // 6
		"[restart]\npolicy = 1\n" + // 8
		"[[files]]\nobject = \"f\"\npath = 2\n" // 11
	want := []string{
		`app.toml:4: key "env": want a table of strings, got a list`,
		`app.toml:5: key "args": want a list of strings, got a string`,
		`app.toml:6: key "replicas": want an integer, got a string`,
		`app.toml:8: key "restart.policy": want a string, got an integer`,
		`app.toml:11: key "files.path": want a string, got an integer`,
	}
	for range 5 { // the decoder meets keys in map order
		_, err := Parse("app.toml", []byte(app))
		if err == nil {
			t.Fatal("parsed a spec of wrong types")
		}
		if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
			t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
		}
	}
}

// Unknown keys and values of the wrong type come in one error, in the
// order of their lines; the values wait for a spec that decodes.
func TestUnknownKeysWithTypeErrors(t *testing.T) {
	const app = "name = \"a\"\nversion = \"1\"\n" +
		"replica = 2\n" + // 3
		"nodes = [\"n\"]\n" +
		"args = \"--x\"\n" // 5
	want := []string{
		`app.toml:3: unknown key "replica" (did you mean "replicas"?)`,
		`app.toml:5: key "args": want a list of strings, got a string`,
	}
	_, err := Parse("app.toml", []byte(app))
	if err == nil {
		t.Fatal("parsed a spec of unknown keys and wrong types")
	}
	if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, want) {
		t.Fatalf("error:\n%s\nwant:\n%s", err, strings.Join(want, "\n"))
	}
}

// A value its type refuses (a duration without a unit) or of the wrong
// type is named with what the rules find in the rest of the spec, in the
// order of the lines: the decoder stopped at the value, and the user who
// fixed it was told of the rest only at the next deploy. A rule does not
// name a key whose value was refused, nor one the spec leaves out: it
// would judge a default left in place of the value refused.
func TestRefusedValuesWithRuleProblems(t *testing.T) {
	const base = "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n"
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{
		{"duration without a unit", base + "[restart]\npolicy = \"on_failure\"\n[health]\nstart_grace = \"30\"\n", []string{
			`app.toml:5: key "restart.policy": want "always", "on-failure" or "never", got "on_failure"`,
			`app.toml:7: key "health.start_grace": invalid duration "30": want e.g. "500ms", "30s", "5m"`,
		}},
		{"size before a rule", base + "[resources]\nmemory = \"12XB\"\n[restart]\njitter = 2.0\n", []string{
			`app.toml:5: key "resources.memory": invalid size "12XB": want a whole number with an optional unit (KiB, MiB, GiB, TiB, KB, MB, GB, TB)`,
			`app.toml:7: key "restart.jitter": want a fraction 0..1, got 2`,
		}},
		{"wrong type", base + "replicas = \"2\"\nstop_signal = \"SIGFOO\"\n", []string{
			`app.toml:4: key "replicas": want an integer, got a string`,
			`app.toml:5: key "stop_signal": unknown signal "SIGFOO": want e.g. "SIGTERM", "SIGINT", "SIGQUIT"`,
		}},
		{"refused value judged by no rule", base + "[restart]\ninitial_backoff = \"10m\"\nmax_backoff = \"5\"\n", []string{
			`app.toml:6: key "restart.max_backoff": invalid duration "5": want e.g. "500ms", "30s", "5m"`,
		}},
		{"in a list of tables", base + "[[routes]]\npath = \"/a/\"\ntimeout = \"5\"\n[[routes]]\npath = \"b\"\n", []string{
			`app.toml:6: key "routes.timeout": invalid duration "5": want e.g. "500ms", "30s", "5m"`,
			`app.toml:8: key "routes[1].path": want a path starting with '/', got "b"`,
		}},
		{"a default drawn from a refused value", "name = 1\nversion = \"1\"\nnodes = [\"n1\"]\n[http]\nport = \"80\"\n[health]\ntype = \"http\"\n[[routes]]\npath = \"/\"\n", []string{
			`app.toml:1: key "name": want a string, got an integer`,
			`app.toml:5: key "http.port": want an integer, got a string`,
		}},
		// A rule that compares two keys would compare the one written
		// with the default left for the one refused.
		{"compared with a refused value", base + "[restart]\ninitial_backoff = 1\nmax_backoff = \"50ms\"\n", []string{
			`app.toml:5: key "restart.initial_backoff": want a duration such as "30s", got an integer`,
		}},
		{"compared with a value without a unit", base + "[restart]\ninitial_backoff = \"1\"\nmax_backoff = \"50ms\"\n", []string{
			`app.toml:5: key "restart.initial_backoff": invalid duration "1": want e.g. "500ms", "30s", "5m"`,
		}},
		{"judged by a refused mode", base + "mode = 1\n[sandbox]\nnetwork = \"none\"\n", []string{
			`app.toml:4: key "mode": want a string, got an integer`,
		}},
		{"one of two keys refused", base + "[[secrets]]\nname = \"s\"\nenv = 1\n", []string{
			`app.toml:6: key "secrets.env": want a string, got an integer`,
		}},
		// Nor with a value of the right type that a rule of its own
		// rejects: the problem is that key's alone. Both keys wrong on
		// their own are both named.
		{"compared with a value above its maximum", base + "[restart]\ninitial_backoff = \"10h\"\nmax_backoff = \"1m\"\n", []string{
			`app.toml:5: key "restart.initial_backoff": 10h0m0s is more than the maximum 1h0m0s`,
		}},
		{"judged by an unknown check type", base + "[health]\ntype = \"tcpx\"\ninterval = \"10ms\"\n", []string{
			`app.toml:5: key "health.type": want "micro", "http", "tcp" or "none", got "tcpx"`,
		}},
		{"compared keys both rejected", base + "[restart]\ninitial_backoff = \"10h\"\nmax_backoff = \"2h\"\n", []string{
			`app.toml:5: key "restart.initial_backoff": 10h0m0s is more than the maximum 1h0m0s`,
			`app.toml:6: key "restart.max_backoff": 2h0m0s is more than the maximum 1h0m0s`,
		}},
		{"in a table of strings", base + "[env]\nA = 1\nNARUN_B = \"x\"\n", []string{
			`app.toml:5: key "env.A": want a string, got an integer`,
			`app.toml:6: key "env.NARUN_B": NARUN_ variables are set by the runner`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("app.toml", []byte(tc.src))
			if err == nil {
				t.Fatal("spec accepted")
			}
			if got := strings.Split(err.Error(), "\n"); !slices.Equal(got, tc.want) {
				t.Errorf("error:\n%s\nwant:\n%s", err, strings.Join(tc.want, "\n"))
			}
		})
	}
}

// The entries of a list of tables share their keys: a value refused in
// one is placed in that entry, not at the same key of another.
func TestRefusedValueInAnEntryOfAList(t *testing.T) {
	src := "name = \"a\"\nversion = \"1\"\nnodes = [\"n1\"]\n" +
		"[[files]]\nobject = \"a\"\npath = \"a\"\n" +
		"[[files]]\nobject = \"b\"\npath = 2\n" + // 9
		"[[files]]\nobject = \"c\"\npath = \"c\"\n"
	want := `app.toml:9: key "files.path": want a string, got an integer`
	_, err := Parse("app.toml", []byte(src))
	if err == nil {
		t.Fatal("spec accepted")
	}
	if err.Error() != want {
		t.Errorf("error:\n%s\nwant:\n%s", err, want)
	}
}
