package runner

import (
	"fmt"
	"html/template"
	"io"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/narun/narun/applets/internal/buildinfo"
	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/sandbox"
)

// AdminHandler serves the runner's admin endpoints: a web page at /, the
// Prometheus metrics at /metrics and /healthz.
func (r *Runner) AdminHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{$}", r.servePage)
	mux.HandleFunc("GET /metrics", r.serveMetrics)
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		io.WriteString(w, "ok\n")
	})
	return mux
}

type pageInstance struct {
	state.Instance
	Uptime string
	Lines  []state.LogLine
}

type pageApp struct {
	Name      string
	Version   string
	Replicas  int
	SpecError string
	Instances []pageInstance
}

type page struct {
	Node      state.Node
	Uptime    string
	Connected bool
	Apps      []pageApp
	Now       string
}

// lastLines is how many output lines per instance the page shows.
const lastLines = 10

func (r *Runner) servePage(w http.ResponseWriter, _ *http.Request) {
	p := page{
		Node:      r.nodeState(),
		Uptime:    roundDur(time.Since(r.started)),
		Connected: r.opts.Conn.IsConnected(),
		Now:       time.Now().UTC().Format(time.RFC3339),
	}
	for _, a := range r.appList() {
		a.mu.Lock()
		pa := pageApp{Name: a.name, SpecError: a.specErr}
		if a.current != nil {
			pa.Version = a.current.Version
			pa.Replicas = a.current.ReplicasOn(r.node, r.labels)
		}
		a.mu.Unlock()
		for _, in := range a.instanceList() {
			st := in.sup.Status()
			pi := pageInstance{Instance: st}
			if !st.Started.IsZero() {
				pi.Uptime = roundDur(time.Since(st.Started))
			}
			lines := in.sup.Lines()
			pi.Lines = lines[max(0, len(lines)-lastLines):]
			pa.Instances = append(pa.Instances, pi)
		}
		p.Apps = append(p.Apps, pa)
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	if err := pageTmpl.Execute(w, p); err != nil {
		r.log.Debug("render admin page", "err", err)
	}
}

func roundDur(d time.Duration) string {
	if d < time.Hour {
		return d.Round(time.Second).String()
	}
	return d.Round(time.Minute).String()
}

var pageTmpl = template.Must(template.New("page").Funcs(template.FuncMap{"shown": cli.Shown}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="refresh" content="2">
<title>narun runner {{.Node.ID}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;font-size:.9em;vertical-align:top}
th{background:#f3f3f3}
.healthy{color:#080}.running{color:#06c}.failed,.crashed{color:#c00}.backoff{color:#c60}
pre{margin:0;font-size:.8em;max-width:60em;white-space:pre-wrap;word-break:break-all}
.stderr{color:#a00}
</style></head><body>
<h1>narun runner <span id="node">{{.Node.ID}}</span></h1>
<p>version {{.Node.Version}} · {{.Node.OS}}/{{.Node.Arch}} · up {{.Uptime}} ·
NATS {{if .Connected}}connected{{else}}<b class="failed">disconnected</b>{{end}} ·
Landlock ABI {{.Node.Capabilities.LandlockABI}} · cgroup v{{.Node.Capabilities.CgroupVersion}} · {{.Now}}</p>
{{range .Node.Duplicates}}<p class="failed duplicate">node id {{$.Node.ID}} is also used by another runner (host {{or .Host "unknown" | shown}}, boot id {{or .Boot "unknown" | shown}}): give each node its own node_id</p>
{{end}}{{if not .Apps}}<p>No apps on this node.</p>{{end}}
<table id="instances">
<thead><tr><th>app</th><th>instance</th><th>version</th><th>state</th><th>pid</th><th>restarts</th><th>uptime</th><th>health</th><th>reason</th><th>last lines</th></tr></thead>
<tbody>
{{range $a := .Apps}}{{range .Instances}}<tr data-app="{{$a.Name}}" data-instance="{{.ID}}" data-state="{{.State}}">
<td>{{$a.Name}}</td><td>{{.ID}}</td><td>{{.Version}}</td><td class="{{.State}}">{{.State}}</td>
<td>{{if .PID}}{{.PID}}{{end}}</td><td>{{.Restarts}}</td><td>{{.Uptime}}</td>
<td>{{if .Healthy}}healthy{{else}}-{{end}}</td><td>{{shown .Reason}}</td>
<td><pre>{{range .Lines}}<span class="{{.Stream}}">{{shown .Line}}</span>
{{end}}</pre></td></tr>
{{end}}{{end}}</tbody></table>
{{range .Apps}}{{if .SpecError}}<p class="failed">{{.Name}}: {{shown .SpecError}}</p>{{end}}{{end}}
</body></html>
`))

// serveMetrics writes the Prometheus text format by hand: the runner needs
// a dozen series, not a client library.
func (r *Runner) serveMetrics(w http.ResponseWriter, _ *http.Request) {
	var b strings.Builder
	type series struct {
		labels string
		value  float64
	}
	family := func(name, kind, help string, ss []series) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, kind)
		for _, s := range ss {
			fmt.Fprintf(&b, "%s%s %s\n", name, s.labels, strconv.FormatFloat(s.value, 'g', -1, 64))
		}
	}
	var up, healthy, restarts, ooms, dropped, cpu, rss, rollbacks []series
	states := map[state.State]int{}
	apps := r.appList()
	for _, a := range apps {
		// Every app, 0 until its first rollback: increase() sees no
		// first rollback of a series that only appears with it.
		rollbacks = append(rollbacks, series{labels("app", a.name, "node", r.node), float64(a.rollbackCount())})
		for _, in := range a.instanceList() {
			st := in.sup.Status()
			states[st.State]++
			l := labels("app", st.App, "instance", st.ID, "node", st.Node)
			up = append(up, series{l, boolf(st.PID > 0)})
			healthy = append(healthy, series{l, boolf(st.Healthy)})
			restarts = append(restarts, series{l, float64(st.Restarts)})
			ooms = append(ooms, series{l, float64(in.sup.OOMKills())})
			dropped = append(dropped, series{l, float64(in.logs.linesDropped())})
			var u usage
			live := false
			secs, ok := r.cpu.read(st.App, st.ID, func() (float64, bool) {
				u, live = r.usage(st)
				return u.cpu, live
			})
			if ok {
				cpu = append(cpu, series{l, secs})
			}
			if live {
				rss = append(rss, series{l, float64(u.rss)})
			}
		}
	}
	family("narun_runner_instance_up", "gauge", "Whether the instance's process is alive.", up)
	family("narun_runner_instance_healthy", "gauge", "Whether the instance passes its health check.", healthy)
	family("narun_runner_instance_restarts_total", "counter", "Process restarts of the instance.", restarts)
	family("narun_runner_instance_oom_kills_total", "counter", "Processes of the instance's ended runs killed by the kernel's OOM killer: at its [resources] memory limit, or for the node's memory.", ooms)
	family("narun_runner_instance_log_lines_dropped_total", "counter", "Output lines of the instance not published to NARUN_LOGS: over its bound of lines or bytes per 30 s.", dropped)
	family("narun_runner_instance_cpu_seconds_total", "counter", "CPU time of the instance's runs, the ended ones included: of each run's cgroup where it has one, else of its process and its reaped children.", cpu)
	family("narun_runner_instance_resident_memory_bytes", "gauge", "Anonymous memory of the instance's cgroup where it has one, else resident memory of its process.", rss)

	// Every state, 0 where no instance is in it: an alert on the healthy
	// ones falling below 1 needs a series to compare when none is.
	var byState []series
	for _, s := range state.All() {
		byState = append(byState, series{labels("state", string(s)), float64(states[s])})
	}
	family("narun_runner_instances", "gauge", "Instances on this node by state.", byState)
	family("narun_runner_apps", "gauge", "Apps known to this runner.", []series{{"", float64(len(apps))}})
	family("narun_runner_rollbacks_total", "counter", "Rollouts of an [http] port app on the host network that stopped the new instance, not healthy, and started the last revision that served again.", rollbacks)
	family("narun_runner_nats_connected", "gauge", "Whether the runner is connected to NATS.", []series{{"", boolf(r.opts.Conn.IsConnected())}})
	family("narun_runner_messages_dropped_total", "counter", "Instance events and output lines dropped while NATS took them slower than they came (unreachable, or reconnecting).", []series{{"", float64(r.out.messagesDropped())}})
	// On the clock as it reads now, as heartbeats give it: time() less
	// this is the uptime, though NTP stepped the clock since the start.
	now := time.Now()
	family("narun_runner_start_time_seconds", "gauge", "When the runner started, in Unix seconds.", []series{{"", float64(onClock(r.started, now, r.wall(now)).Unix())}})
	family("narun_runner_goroutines", "gauge", "Goroutines of the runner.", []series{{"", float64(runtime.NumGoroutine())}})
	if u, err := procUsage(os.Getpid()); err == nil {
		family("narun_runner_resident_memory_bytes", "gauge", "Resident memory of the runner's process.", []series{{"", float64(u.rss)}})
		family("narun_runner_cpu_seconds_total", "counter", "CPU time of the runner's process.", []series{{"", u.cpu}})
	}
	family("narun_runner_info", "gauge", "Runner build and node.", []series{{labels("version", buildinfo.Get().Version, "node", r.node), 1}})
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	io.WriteString(w, b.String())
}

func boolf(v bool) float64 {
	if v {
		return 1
	}
	return 0
}

// labels formats Prometheus labels from name, value pairs.
func labels(kv ...string) string {
	var b strings.Builder
	b.WriteByte('{')
	for i := 0; i+1 < len(kv); i += 2 {
		if i > 0 {
			b.WriteByte(',')
		}
		v := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`).Replace(kv[i+1])
		fmt.Fprintf(&b, `%s="%s"`, kv[i], v)
	}
	b.WriteByte('}')
	return b.String()
}

// usage reads what the instance's current run uses; false when none runs
// or nothing tells. The cgroup counts the app and all it started, daemons
// that left its tree included, never a sandbox's launcher.
func (r *Runner) usage(st state.Instance) (usage, bool) {
	var stats func() sandbox.Stats
	if run, ok := r.sandboxes.get(st.App, st.ID); ok && run.launch != nil {
		stats = run.launch.Stats
	} else if cg := r.execCgroups.get(st.App, st.ID); cg != nil {
		stats = cg.Stats
	}
	if stats != nil {
		s := stats()
		return usage{cpu: s.CPU.Seconds(), rss: s.RSS}, true
	}
	if st.PID > 0 {
		if u, err := procUsage(st.PID); err == nil {
			return u, true
		}
	}
	return usage{}, false
}

// cpuTotals keeps the CPU time of each instance's runs that ended: a
// run's cgroup or process goes with it and the next run counts from zero,
// while narun_runner_instance_cpu_seconds_total is a counter, which a
// fall reads as a reset, and a series that must not vanish between runs.
// An instance is tracked from its first run until it is dropped.
type cpuTotals struct {
	mu sync.Mutex
	m  map[string]*cpuTotal
}

type cpuTotal struct {
	// ended is the CPU seconds of the runs that ended.
	ended float64
	// shown is the highest total read: a run without a cgroup of its
	// own is reaped before its end is recorded, and a read in between
	// finds it neither live nor ended.
	shown float64
}

// track starts counting the instance's runs.
func (c *cpuTotals) track(app, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*cpuTotal{}
	}
	if _, ok := c.m[instKey(app, id)]; !ok {
		c.m[instKey(app, id)] = &cpuTotal{}
	}
}

// runEnded adds the CPU seconds end reads of a run that ended. end also
// takes the run from what usage reads, under the lock read holds, so that
// a read counts the run once: live or ended.
func (c *cpuTotals) runEnded(app, id string, end func() float64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	secs := end()
	if t, ok := c.m[instKey(app, id)]; ok {
		t.ended += secs
	}
}

// read returns the instance's CPU seconds: its ended runs' and the
// current one's as live reads it. Untracked (a factory other than the
// runner's) it is live's reading alone.
func (c *cpuTotals) read(app, id string, live func() (float64, bool)) (float64, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	cur, ok := live()
	t, tracked := c.m[instKey(app, id)]
	if !tracked {
		return cur, ok
	}
	t.shown = max(t.shown, t.ended+cur)
	return t.shown, true
}

// forget drops a stopped instance.
func (c *cpuTotals) forget(app, id string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.m, instKey(app, id))
}

// reapedCPU is the CPU time of a reaped process and of the children it
// reaped, as procUsage reads it from a live one.
func reapedCPU(ps *os.ProcessState) float64 {
	if ps == nil {
		return 0
	}
	return (ps.UserTime() + ps.SystemTime()).Seconds()
}

type usage struct {
	cpu float64
	rss int64
}

// clockTicks is USER_HZ, 100 on every Linux architecture narun supports.
const clockTicks = 100

// procUsage reads the CPU time and resident memory of pid from /proc.
func procUsage(pid int) (usage, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return usage{}, err
	}
	f, err := statFields(b)
	if err != nil {
		return usage{}, err
	}
	var ticks uint64
	// utime, stime, cutime, cstime: fields 14 to 17 of proc(5).
	for _, s := range f[11:15] {
		n, _ := strconv.ParseUint(s, 10, 64)
		ticks += n
	}
	pages, _ := strconv.ParseInt(f[21], 10, 64)
	return usage{cpu: float64(ticks) / clockTicks, rss: pages * int64(os.Getpagesize())}, nil
}
