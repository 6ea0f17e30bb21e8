package applets_test

import (
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// --check judges the file and flags as a start would, naming the line of
// each problem, and binds and writes nothing: it passes with every
// address of the file held by another listener (one each: two of narun's
// own on one address are refused), and leaves no data dir.
func TestCheckFlag(t *testing.T) {
	addr := heldAddr(t)
	dir := t.TempDir()
	write := fileWriter(t, dir)
	good := write("good.toml", `[nats]
listen = "`+addr+`"
[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "`+heldAddr(t)+`"
[runner]
admin_listen = "`+heldAddr(t)+`"
[[gateway.routes]]
path = "/a/"
service = "a"
`)
	badNATS := write("nats.toml", "[nats]\nlisten = \""+addr+"\"\nserver_name = \"a b\"\n")
	badRoutes := write("routes.toml", `[[gateway.routes]]
path = "/a/"
service = "a"

[[gateway.routes]]
path = "/a/"
service = "b"
`)
	badTLS := write("tls.toml", "[gateway.tls]\ncert = \""+filepath.Join(dir, "none.pem")+"\"\nkey = \""+filepath.Join(dir, "none.key")+"\"\n")
	badTLSKey := write("tlskey.toml", "[gateway.tls]\ncert = \""+write("cert.pem", "x")+"\"\nkey = \""+filepath.Join(dir, "none.key")+"\"\n")
	badNode := write("node.toml", "[runner]\nnode_id = \"x y\"\n")
	badListen := write("listen.toml", "[gateway]\nadmin_listen = \"9090\"\n[runner]\nadmin_listen = \"9101\"\n")
	offHTTPS := write("offhttps.toml", "[gateway.tls]\nlisten = \"8443\"\n")
	badHTTPS := write("https.toml", "[gateway.tls]\nlisten = \"8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n")
	badHost := write("host.toml", "[gateway]\nlisten = \"1.2.3.4.5:8080\"\nadmin_listen = \"a b:9090\"\n")
	badAdminHost := write("adminhost.toml", "[gateway]\nadmin_listen = \"-a:9090\"\n[runner]\nadmin_listen = \"1.2.3.256:9101\"\n")
	badRunnerHost := write("runnerhost.toml", "[runner]\nadmin_listen = \"1.2.3.256:9101\"\n")
	tinyStore := write("store.toml", "[nats.jetstream]\nmax_store = \"1KiB\"\n")
	badNATSHost := write("natshost.toml", "[nats]\nlisten = \"1.2.3.4.5:4222\"\n")
	badClusterHost := write("clusterhost.toml", "[nats]\nserver_name = \"a\"\n[nats.cluster]\nname = \"c\"\nlisten = \"a b:6222\"\nroutes = [\"nats-route://127.0.0.1:6222\"]\n")
	badLeafHost := write("leafhost.toml", "[nats.leafnodes]\nlisten = \"1.2.3.256:7422\"\n")
	badHTTPSHost := write("httpshost.toml", "[gateway.tls]\nlisten = \"1.2.3.4.5:8443\"\ncert = \"c.pem\"\nkey = \"k.pem\"\n")
	noCreds := filepath.Join(dir, "none.creds")
	badURL := write("url.toml", "[gateway]\nnats_url = \"nats://h:port:x\"\n[runner]\nnats_url = \"nats://h:port:x\"\n")
	badNkey := write("nkey.toml", "[gateway]\nnats_nkey = \""+noCreds+"\"\n")
	badCreds := write("creds.toml", "[gateway]\nnats_creds = \""+noCreds+"\"\n[runner]\nnats_creds = \""+noCreds+"\"\n")
	data := filepath.Join(dir, "data")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"up valid", []string{"up", "--config", good}, 0, "configuration valid (" + good + ")"},
		{"up nats", []string{"up", "--config", badNATS}, 1, badNATS + `:3: key "nats.server_name"`},
		{"up routes", []string{"up", "--config", badRoutes}, 1, badRoutes + `:1: route #1 (path "/a/") and ` + badRoutes + `:5: route #2`},
		{"up tls", []string{"up", "--config", badTLS}, 1, badTLS + `:2: key "gateway.tls.cert": load tls certificate ` + filepath.Join(dir, "none.pem")},
		{"up node id", []string{"up", "--config", badNode}, 1, badNode + `:2: key "runner.node_id"`},
		{"up node id flag", []string{"up", "--config", good, "--node-id", "a.b"}, 2, `--node-id "a.b"`},
		{"nats valid", []string{"nats", "--config", good}, 0, "configuration valid"},
		{"nats invalid", []string{"nats", "--config", badNATS}, 1, badNATS + `:3: key "nats.server_name"`},
		{"gw valid", []string{"gw", "--config", good}, 0, "configuration valid"},
		{"gw routes", []string{"gw", "--config", badRoutes}, 1, "duplicate route: " + badRoutes + ":1"},
		{"gw tls", []string{"gw", "--config", badTLS}, 1, badTLS + `:2: key "gateway.tls.cert": load tls certificate`},
		{"gw tls key", []string{"gw", "--config", badTLSKey}, 1, badTLSKey + `:3: key "gateway.tls.key": load tls certificate`},
		{"runner valid", []string{"runner", "--config", good}, 0, "configuration valid"},
		{"up listen", []string{"up", "--config", badListen}, 1, badListen + `:2: key "gateway.admin_listen": "9090": want host:port`},
		{"gw listen", []string{"gw", "--config", badListen}, 1, badListen + `:2: key "gateway.admin_listen": "9090": want host:port`},
		{"gw https without certificate", []string{"gw", "--config", offHTTPS}, 0, "configuration valid"},
		{"gw https", []string{"gw", "--config", badHTTPS}, 1, badHTTPS + `:2: key "gateway.tls.listen": "8443": want host:port`},
		{"gw listen flag", []string{"gw", "--config", good, "--listen", "8080"}, 2, `--listen "8080": want host:port`},
		{"gw https flag", []string{"gw", "--config", badHTTPS, "--tls-listen", "8443"}, 2, `--tls-listen "8443": want host:port`},
		{"up https flag", []string{"up", "--config", badHTTPS, "--tls-listen", "8443"}, 2, `--tls-listen "8443": want host:port`},
		{"gw port past 65535", []string{"gw", "--config", good, "--admin-listen", "127.0.0.1:99999"}, 2, `--admin-listen "127.0.0.1:99999"`},
		{"gw port by service name", []string{"gw", "--config", good, "--listen", "127.0.0.1:http"}, 0, "configuration valid"},
		{"gw ipv6 listen", []string{"gw", "--config", good, "--listen", "[::1]:8080", "--admin-listen", "[fe80::1%eth0]:9090"}, 0, "configuration valid"},
		{"gw ipv6 listen without brackets", []string{"gw", "--config", good, "--listen", "::1:8080"}, 2, `--listen "::1:8080": want host:port or :port: address ::1:8080: too many colons in address (an IPv6 address takes brackets: "[::1]:8080")`},
		{"gw listen host flag", []string{"gw", "--config", good, "--listen", "1.2.3.4.5:8080"}, 2, `--listen "1.2.3.4.5:8080": want host:port or :port: host "1.2.3.4.5" is neither an IP address nor a host name`},
		{"gw admin listen host flag", []string{"gw", "--config", good, "--admin-listen", "a b:9090"}, 2, `--admin-listen "a b:9090": want host:port or :port: host "a b" is neither`},
		{"gw https host flag", []string{"gw", "--config", badHTTPS, "--tls-listen", "1.2.3.256:8443"}, 2, `--tls-listen "1.2.3.256:8443": want host:port or :port: host "1.2.3.256" is neither`},
		{"up listen host flag", []string{"up", "--config", good, "--listen", "1.2.3.4.5:8080"}, 2, `--listen "1.2.3.4.5:8080": want host:port or :port: host "1.2.3.4.5" is neither`},
		{"gw listen host", []string{"gw", "--config", badHost}, 1, badHost + `:2: key "gateway.listen": "1.2.3.4.5:8080": want host:port or :port: host "1.2.3.4.5" is neither`},
		{"up listen host", []string{"up", "--config", badHost}, 1, badHost + `:2: key "gateway.listen": "1.2.3.4.5:8080": want host:port or :port: host "1.2.3.4.5" is neither`},
		{"gw admin listen host", []string{"gw", "--config", badAdminHost}, 1, badAdminHost + `:2: key "gateway.admin_listen": "-a:9090": want host:port or :port: host "-a" is neither`},
		{"up admin listen host", []string{"up", "--config", badAdminHost}, 1, badAdminHost + `:2: key "gateway.admin_listen": "-a:9090": want host:port or :port: host "-a" is neither`},
		{"up runner admin listen host", []string{"up", "--config", badRunnerHost}, 1, badRunnerHost + `:2: key "runner.admin_listen": "1.2.3.256:9101": want host:port or :port: host "1.2.3.256" is neither`},
		{"runner admin listen host", []string{"runner", "--config", badRunnerHost}, 1, badRunnerHost + `:2: key "runner.admin_listen": "1.2.3.256:9101": want host:port or :port: host "1.2.3.256" is neither`},
		{"up tiny store", []string{"up", "--config", tinyStore}, 1, tinyStore + `:2: key "nats.jetstream.max_store": want at least 8 MiB`},
		{"nats listen host", []string{"nats", "--config", badNATSHost}, 1, badNATSHost + `:2: key "nats.listen": "1.2.3.4.5:4222": host "1.2.3.4.5" is neither an IP address nor a host name`},
		{"nats listen host flag", []string{"nats", "--config", good, "--listen", "1.2.3.4.5:4222"}, 2, `--listen: "1.2.3.4.5:4222": host "1.2.3.4.5" is neither`},
		{"up nats listen host", []string{"up", "--config", badNATSHost}, 1, badNATSHost + `:2: key "nats.listen": "1.2.3.4.5:4222": host "1.2.3.4.5" is neither`},
		{"up cluster listen host", []string{"up", "--config", badClusterHost}, 1, badClusterHost + `:5: key "nats.cluster.listen": "a b:6222": host "a b" is neither`},
		{"up leaf listen host", []string{"up", "--config", badLeafHost}, 1, badLeafHost + `:2: key "nats.leafnodes.listen": "1.2.3.256:7422": host "1.2.3.256" is neither`},
		{"gw https host", []string{"gw", "--config", badHTTPSHost}, 1, badHTTPSHost + `:2: key "gateway.tls.listen": "1.2.3.4.5:8443": want host:port or :port: host "1.2.3.4.5" is neither`},
		{"up https host", []string{"up", "--config", badHTTPSHost}, 1, badHTTPSHost + `:2: key "gateway.tls.listen": "1.2.3.4.5:8443": want host:port or :port: host "1.2.3.4.5" is neither`},
		{"gw listen host name", []string{"gw", "--config", good, "--listen", "localhost:8080", "--admin-listen", "my_host.example.:9090"}, 0, "configuration valid"},
		{"runner listen", []string{"runner", "--config", badListen}, 1, badListen + `:4: key "runner.admin_listen": "9101": want host:port`},
		{"runner creds", []string{"runner", "--config", badCreds}, 1, badCreds + `:4: key "runner.nats_creds": nats creds ` + noCreds},
		{"gw creds", []string{"gw", "--config", badCreds}, 1, badCreds + `:2: key "gateway.nats_creds": nats creds ` + noCreds},
		{"gw nkey", []string{"gw", "--config", badNkey}, 1, badNkey + `:2: key "gateway.nats_nkey": nats nkey ` + noCreds},
		{"runner nats url", []string{"runner", "--config", badURL}, 1, badURL + `:4: key "runner.nats_url": nats url: parse`},
		{"gw nats url", []string{"gw", "--config", badURL}, 1, badURL + `:2: key "gateway.nats_url": nats url: parse`},
		{"gw nats url flag", []string{"gw", "--config", good, "--nats-url", "nats://a:1, h:x:y"}, 1, `--nats-url: nats url: parse "nats://h:x:y"`},
		{"runner creds flag", []string{"runner", "--config", good, "--nats-creds", noCreds}, 1, `--nats-creds: nats creds ` + noCreds},
		{"runner node id", []string{"runner", "--config", badNode}, 1, badNode + `:2: key "runner.node_id"`},
		{"runner node id flag over the file's", []string{"runner", "--config", badNode, "--node-id", "ok"}, 0, "configuration valid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append([]string{"narun"}, tc.args...)
			args = append(args, "--check")
			if tc.args[0] != "gw" {
				args = append(args, "--data-dir", data)
			}
			code, stdout, stderr := run(args...)
			if code != tc.code || !strings.Contains(stdout+stderr, tc.want) {
				t.Fatalf("exit %d, want %d; output %q, want it to contain %q", code, tc.code, stdout+stderr, tc.want)
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Fatalf("the check made the data dir (stat: %v)", err)
			}
		})
	}
}

// A data dir that data_dir in the file names, and that a start could not
// make, is refused naming the file, line and key, as every other problem
// of the file is: the operator is told which line to mend, not only which
// directory. A --data-dir that overrides it is not the file's line.
func TestDataDirProblemNamesTheFileLine(t *testing.T) {
	dir := t.TempDir()
	blocker := filepath.Join(dir, "file")
	if err := os.WriteFile(blocker, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, data string }{
		{"pseudo file system", "/proc/narun-test/data"},
		{"file in the way", filepath.Join(blocker, "data")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "narun.toml")
			if err := os.WriteFile(file, []byte("log_level = \"info\"\ndata_dir = \""+tc.data+"\"\n"), 0o600); err != nil {
				t.Fatal(err)
			}
			want := file + `:2: key "data_dir"`
			for _, args := range [][]string{
				{"nats", "--check"},
				{"runner", "--node-id", "n1", "--check"},
				{"up", "--node-id", "n1", "--check"},
				{"nats", "--listen", "127.0.0.1:0"},
			} {
				code, stdout, stderr := run(append(append([]string{"narun"}, args...), "--config", file)...)
				if code != 1 || !strings.Contains(stderr, want) || !strings.Contains(stderr, tc.data) {
					t.Errorf("%v: exit %d, %q%q; want 1 naming %s and %s", args, code, stdout, stderr, want, tc.data)
				}
			}
			code, stdout, stderr := run("narun", "nats", "--check", "--config", file, "--data-dir", tc.data)
			if code != 1 || strings.Contains(stderr, want) {
				t.Errorf("--data-dir: exit %d, %q%q; want 1 without %s, which --data-dir overrides", code, stdout, stderr, want)
			}
		})
	}
}

// A data dir that cannot be made, a file being in its way, fails --check
// as it fails the start, without --check writing anything.
func TestCheckFlagRefusesADataDirThatCannotBeMade(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(file, "data")
	// What the check must agree with: the start fails on the directory.
	code, _, stderr := run("narun", "nats", "--config", "/dev/null", "--data-dir", data, "--listen", "127.0.0.1:0")
	if code != 1 || !strings.Contains(stderr, data) {
		t.Fatalf("a start on a data dir under a file: exit %d, %q; want it to fail naming the directory", code, stderr)
	}
	for _, args := range [][]string{
		{"nats"},
		{"runner", "--node-id", "n1"},
		{"up", "--node-id", "n1"},
	} {
		code, stdout, stderr := run(append(append([]string{"narun"}, args...), "--config", "/dev/null", "--data-dir", data, "--check")...)
		if code != 1 || !strings.Contains(stderr, file+" is not a directory") {
			t.Errorf("%s --check: exit %d, %q%q; want 1 saying %s is not a directory", args[0], code, stdout, stderr, file)
		}
	}
}

// A data dir that others may write, or that another user owns, is refused
// by a start and by --check, naming it: whoever may replace its cached
// binaries or its signing.key runs code as narun's user, root on a
// device. A user other than root gets ./narun-data by default, which
// another user could have made beforehand in a shared directory (/tmp).
// Each start is given an address held here, so that before the data dir
// was checked it failed there instead of running.
func TestDataDirOthersMayWriteIsRefused(t *testing.T) {
	addr := heldAddr(t)
	dir := t.TempDir()
	shared := filepath.Join(dir, "shared")
	if err := os.Mkdir(shared, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(shared, 0o777); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, data, want string }{
		{"writable by others", shared, "data dir " + shared + " is writable by its group or others (mode 0777)"},
	}
	if os.Geteuid() == 0 {
		foreign := filepath.Join(dir, "foreign")
		if err := os.Mkdir(foreign, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chown(foreign, 65534, 65534); err != nil {
			t.Fatal(err)
		}
		cases = append(cases, struct{ name, data, want string }{"another user's", foreign, "data dir " + foreign + " belongs to uid 65534, not to uid 0"})
	}
	for _, tc := range cases {
		for _, args := range [][]string{
			{"nats", "--listen", addr},
			{"runner", "--node-id", "n1", "--nats-url", "nats://" + addr, "--admin-listen", addr},
			{"up", "--node-id", "n1", "--nats-listen", addr, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", "127.0.0.1:0"},
		} {
			for _, check := range []bool{false, true} {
				argv := append(append([]string{"narun"}, args...), "--config", "/dev/null", "--data-dir", tc.data)
				if check {
					argv = append(argv, "--check")
				}
				t.Run(fmt.Sprintf("%s/%s/check=%v", tc.name, args[0], check), func(t *testing.T) {
					code, stdout, stderr := run(argv...)
					if code != 1 || !strings.Contains(stderr, tc.want) {
						t.Errorf("exit %d, %q%q; want 1 saying %q", code, stdout, stderr, tc.want)
					}
					if entries, _ := os.ReadDir(tc.data); len(entries) > 0 {
						t.Errorf("narun wrote in a data dir it refused: %v", entries)
					}
				})
			}
		}
	}
}

// heldAddr is a local address another listener holds until the test ends:
// a start given it fails, so one that got past what a test checks shows.
func heldAddr(t *testing.T) string {
	t.Helper()
	held, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { held.Close() })
	return held.Addr().String()
}

// With JSON logs every line --check prints is JSON, the verdict too: an
// ExecStartPre=narun up --check writes it into the same journal as the
// service's JSON log.
func TestCheckAnswersInJSON(t *testing.T) {
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	for _, applet := range []string{"up", "nats", "gw", "runner"} {
		args := []string{"narun", applet, "--check", "--log-format", "json"}
		if applet != "gw" {
			args = append(args, "--data-dir", data)
		}
		code, stdout, stderr := run(args...)
		if code != 0 {
			t.Fatalf("%s --check: exit %d: %s%s", applet, code, stdout, stderr)
		}
		valid := false
		for _, line := range strings.Split(strings.TrimSpace(stdout+stderr), "\n") {
			var rec map[string]any
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Errorf("%s --check with JSON logs printed a line that is not JSON: %q", applet, line)
				continue
			}
			valid = valid || rec["msg"] == "configuration valid"
		}
		if !valid {
			t.Errorf("%s --check with JSON logs: no record says the configuration is valid: %q", applet, stdout+stderr)
		}
	}
}

// A data_dir the file gives as a relative path is its directory's since
// narun took paths from the file's directory; earlier releases took it
// from the working directory. A start that finds the node's data there
// and none where the path now points must not begin anew on an empty
// store, which hides every app, secret and key the node had: it refuses,
// naming both directories, as --check does. Each start is given an
// address held here, so one that got past the check fails there.
func TestRelativeDataDirLeftBehindIsRefused(t *testing.T) {
	addr := heldAddr(t)
	dir := t.TempDir()
	// What narun up of an earlier release, run in dir, left.
	old := filepath.Join(dir, "data")
	if err := os.MkdirAll(filepath.Join(old, "jetstream", "jetstream", "$G", "streams", "KV_narun-apps"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(old, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(conf, "narun.toml")
	if err := os.WriteFile(file, []byte("log_level = \"info\"\ndata_dir = \"data\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	now := filepath.Join(conf, "data")
	t.Chdir(dir)
	for _, args := range [][]string{
		{"nats", "--listen", addr},
		{"runner", "--node-id", "n1", "--nats-url", "nats://" + addr, "--admin-listen", addr},
		{"up", "--node-id", "n1", "--nats-listen", addr, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0", "--runner-admin-listen", "127.0.0.1:0"},
	} {
		for _, check := range []bool{false, true} {
			argv := append(append([]string{"narun"}, args...), "--config", file)
			if check {
				argv = append(argv, "--check")
			}
			t.Run(fmt.Sprintf("%s/check=%v", args[0], check), func(t *testing.T) {
				code, stdout, stderr := run(argv...)
				if code != 1 || !strings.Contains(stderr, file+`:2: key "data_dir"`) || !strings.Contains(stderr, "move "+old+" to "+now) {
					t.Errorf("exit %d, %q%q; want 1 naming the line, %s and %s", code, stdout, stderr, old, now)
				}
				if _, err := os.Stat(now); err == nil {
					t.Errorf("narun made %s, beside the data it left behind", now)
				}
			})
		}
	}
	// Given as it was meant, the same file starts on the node's data.
	code, stdout, stderr := run("narun", "up", "--node-id", "n1", "--config", file, "--data-dir", old, "--check")
	if code != 0 {
		t.Errorf("--data-dir %s: exit %d, %q%q; want 0", old, code, stdout, stderr)
	}
}

// A store of another NATS server in the working directory's data is no
// node's data: a first start from there, with a relative data_dir, goes
// ahead.
func TestRelativeDataDirBesideAnotherStore(t *testing.T) {
	dir := t.TempDir()
	if err := os.MkdirAll(filepath.Join(dir, "data", "jetstream", "jetstream", "$G", "streams", "ORDERS"), 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "conf")
	if err := os.Mkdir(conf, 0o755); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(conf, "narun.toml")
	if err := os.WriteFile(file, []byte("data_dir = \"data\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Chdir(dir)
	if code, stdout, stderr := run("narun", "up", "--node-id", "n1", "--config", file, "--check"); code != 0 {
		t.Errorf("exit %d, %q%q; want 0: the store in %s is another server's", code, stdout, stderr, filepath.Join(dir, "data"))
	}
}

// --check names every problem of the configuration in one run, each with
// its line, not only the first: an operator with three mistakes in three
// parts must not run it three times to find them. A start that fails
// names them all too, before it makes the data dir.
func TestCheckNamesEveryProblem(t *testing.T) {
	dir := t.TempDir()
	clash := heldAddr(t)
	data := filepath.Join(dir, "data")
	write := fileWriter(t, dir)
	upFile := write("up.toml", `[nats]
listen = "`+clash+`"
[gateway]
listen = "`+clash+`"
admin_listen = "`+heldAddr(t)+`"
[runner]
heartbeat_interval = "1h"
admin_listen = "`+heldAddr(t)+`"
[[gateway.routes]]
path = "no-slash"
service = "a"
`)
	gwFile := write("gw.toml", `[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "127.0.0.1"
[[gateway.routes]]
path = "/a/"
service = "a b"
`)
	routesFile := write("routes.toml", `[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "`+heldAddr(t)+`"
[[gateway.routes]]
path = "/a/"
service = "a b"
[[gateway.routes]]
path = "/b/"
match = "regexp"
service = "b"
[[gateway.routes]]
path = "/c/"
service = "_INBOX.c"
timeout = "2h"
methods = ["GET,POST"]
`)
	missing := filepath.Join(dir, "missing")
	logFile := write("log.toml", "log_level = \"loud\"\nlog_format = \"xml\"\n")
	clientFile := write("client.toml", `[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "`+heldAddr(t)+`"
nats_url = "nats://%zz"
nats_creds = "`+missing+`.creds"
nats_nkey = "`+missing+`.nk"
nats_ca = "`+missing+`.pem"
nats_key = "`+missing+`.key"
`)
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"gw: the log settings", []string{"gw", "--config", logFile, "--check"}, []string{
			logFile + `:1: key "log_level"`,
			logFile + `:2: key "log_format"`,
		}},
		{"gw: the client settings", []string{"gw", "--config", clientFile, "--check"}, []string{
			clientFile + `:4: key "gateway.nats_url"`,
			clientFile + `:5: key "gateway.nats_creds"`,
			clientFile + `:6: key "gateway.nats_nkey"`,
			clientFile + `:7: key "gateway.nats_ca"`,
			clientFile + `:8: key "gateway.nats_key"`,
		}},
		{"up: a route, the runner and a listener", []string{"up", "--config", upFile, "--data-dir", data, "--check"}, []string{
			upFile + `:2: key "nats.listen" "` + clash + `" and ` + upFile + `:4: key "gateway.listen" "` + clash + `": two of narun's listeners on the same address`,
			upFile + `:7: key "runner.heartbeat_interval": want at most 15s`,
			upFile + `:10: route #1 (path "no-slash"): path "no-slash" must start with /`,
		}},
		{"up start: a route, the runner and a listener", []string{"up", "--config", upFile, "--data-dir", data}, []string{
			upFile + `:2: key "nats.listen" "` + clash + `" and ` + upFile + `:4: key "gateway.listen" "` + clash + `": two of narun's listeners on the same address`,
			upFile + `:7: key "runner.heartbeat_interval": want at most 15s`,
			upFile + `:10: route #1 (path "no-slash"): path "no-slash" must start with /`,
		}},
		{"gw: a route and a listener", []string{"gw", "--config", gwFile, "--check"}, []string{
			gwFile + `:3: key "gateway.admin_listen": "127.0.0.1": want host:port`,
			gwFile + `:6: route #1 (path "/a/"): service "a b"`,
		}},
		{"gw: two routes", []string{"gw", "--config", routesFile, "--check"}, []string{
			routesFile + `:6: route #1 (path "/a/"): service "a b"`,
			routesFile + `:9: route #2 (path "/b/"): match "regexp"`,
			routesFile + `:13: route #3 (path "/c/"): service "_INBOX.c"`,
			routesFile + `:15: route #3 (path "/c/"): method "GET,POST"`,
			routesFile + `:14: route #3 (path "/c/"): timeout 2h0m0s`,
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := run(append([]string{"narun"}, tc.args...)...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			for _, want := range tc.want {
				if !strings.Contains(stdout+stderr, want) {
					t.Errorf("output does not name %q:\n%s", want, stdout+stderr)
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the data dir was made (stat: %v)", err)
			}
		})
	}
}

// The embedded NATS server's problems are named with the rest, each with
// its line, in the order of the file's lines: by --check, which judged
// the [nats] table only up to its first problem, and by a start, which
// judged it only once the other checks had passed and the data dir was
// made.
func TestCheckNamesEveryNATSProblem(t *testing.T) {
	dir := t.TempDir()
	// Each run gets a data dir of its own, in place of data: one made
	// must not fail the next.
	const data = "<data>"
	write := fileWriter(t, dir)
	upFile := write("up.toml", `[nats]
listen = "`+heldAddr(t)+`"
server_name = "a b"
[nats.jetstream]
max_store = "1KiB"
[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "`+heldAddr(t)+`"
[runner]
heartbeat_interval = "1h"
admin_listen = "`+heldAddr(t)+`"
`)
	clash := heldAddr(t)
	natsFile := write("nats.toml", `[nats]
listen = "`+clash+`"
server_name = "a b"
http_listen = "`+clash+`"
[nats.jetstream]
max_store = "1KiB"
`)
	onlyNATS := write("onlynats.toml", `[nats]
listen = "`+heldAddr(t)+`"
server_name = "a b"
[nats.jetstream]
max_store = "1KiB"
[gateway]
listen = "`+heldAddr(t)+`"
admin_listen = "`+heldAddr(t)+`"
[runner]
admin_listen = "`+heldAddr(t)+`"
`)
	upWant := []string{
		upFile + `:3: key "nats.server_name": "a b": must not contain spaces`,
		upFile + `:5: key "nats.jetstream.max_store": want at least 8 MiB`,
		upFile + `:10: key "runner.heartbeat_interval": want at most 15s`,
	}
	natsWant := []string{
		natsFile + `:2: key "nats.listen" "` + clash + `" and ` + natsFile + `:4: key "nats.http_listen" "` + clash + `": two of narun's listeners on the same address`,
		natsFile + `:3: key "nats.server_name": "a b": must not contain spaces`,
		natsFile + `:6: key "nats.jetstream.max_store": want at least 8 MiB`,
	}
	for _, tc := range []struct {
		name string
		args []string
		want []string
	}{
		{"up --check", []string{"up", "--config", upFile, "--data-dir", data, "--check"}, upWant},
		{"up start", []string{"up", "--config", upFile, "--data-dir", data}, upWant},
		{"up start, [nats] alone", []string{"up", "--config", onlyNATS, "--data-dir", data}, []string{
			onlyNATS + `:3: key "nats.server_name": "a b": must not contain spaces`,
			onlyNATS + `:5: key "nats.jetstream.max_store": want at least 8 MiB`,
		}},
		{"nats --check", []string{"nats", "--config", natsFile, "--data-dir", data, "--check"}, natsWant},
		{"nats start", []string{"nats", "--config", natsFile, "--data-dir", data}, natsWant},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := filepath.Join(t.TempDir(), "data")
			args := []string{"narun"}
			for _, arg := range tc.args {
				args = append(args, strings.ReplaceAll(arg, "<data>", data))
			}
			code, stdout, stderr := run(args...)
			if code != 1 {
				t.Errorf("exit %d, want 1", code)
			}
			out := stdout + stderr
			last := -1
			for _, want := range tc.want {
				i := strings.Index(out, want)
				switch {
				case i < 0:
					t.Errorf("output does not name %q:\n%s", want, out)
				case i < last:
					t.Errorf("%q is named before the problem of an earlier line:\n%s", want, out)
				default:
					last = i
				}
			}
			if _, err := os.Stat(data); !os.IsNotExist(err) {
				t.Errorf("the data dir was made (stat: %v)", err)
			}
		})
	}
}

// fileWriter returns a function that writes a file of dir and returns its
// path.
func fileWriter(t *testing.T, dir string) func(name, body string) string {
	return func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
}
