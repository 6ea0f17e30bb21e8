package ctl

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/gateway"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/state"
)

func nodeCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "node",
		Usage: "runners that sent a heartbeat recently",
		Subcommands: []*ucli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "live nodes", Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, nodeList)},
		},
	}
}

func nodeList(ctx context.Context, c *ucli.Context, e *env) error {
	nodes, err := e.nodes(ctx)
	if err != nil {
		return err
	}
	if c.Bool(flagJSON) {
		all := []nodeJSON{}
		for _, n := range nodes {
			all = append(all, nodeView(n))
		}
		return e.printJSON(all)
	}
	now := e.serverNow()
	t := e.table("NODE", "VERSION", "PLATFORM", "LABELS", "INSTANCES", "SANDBOX", "SIGNED-ONLY", "SEEN")
	for _, n := range nodes {
		up := 0
		for _, in := range n.Instances {
			if in.State.Up() {
				up++
			}
		}
		sandbox := "no"
		if n.Capabilities.Sandbox {
			sandbox = fmt.Sprintf("landlock v%d, cgroup v%d", n.Capabilities.LandlockABI, n.Capabilities.CgroupVersion)
		}
		signedOnly := "no"
		if n.SignaturesRequired {
			signedOnly = "yes"
		}
		seen := shortDuration(now.Sub(n.Stored)) + " ago"
		if n.Stored.After(now) && late(n, now) {
			seen = "stamped " + shortDuration(n.Stored.Sub(now)) + " ahead"
		}
		instances := fmt.Sprintf("%d/%d", up, len(n.Instances))
		if late(n, now) {
			seen += " (late: down?)"
			// As app status says of them (unknown): what a silent node
			// last said runs may have died with it.
			instances = fmt.Sprintf("?/%d", len(n.Instances))
		}
		t.row(n.ID, n.Version, n.OS+"/"+n.Arch, labels(n.Labels), instances, sandbox, signedOnly, seen)
	}
	if err := t.flush(); err != nil {
		return err
	}
	e.warnNodes(nodes)
	return nil
}

// nodeJSON is a heartbeat as node list --json prints it: with every key,
// where the heartbeat leaves out what is unset to stay small. A runner
// with nothing to run writes its lists as null, and one of an earlier
// release leaves out keys it did not know: a script would otherwise have
// to tell null, [] and a missing key apart for every node.
type nodeJSON struct {
	state.Node
	Labels             map[string]string `json:"labels"`
	Capabilities       capabilitiesJSON  `json:"capabilities"`
	SignaturesRequired bool              `json:"signatures_required"`
	TrustedKeys        []string          `json:"trusted_keys"`
	SigningKeyFile     string            `json:"signing_key_file"`
	// SecretKeys stays null from a runner of an earlier release, which
	// says nothing of its keys.
	SecretKeys *secretKeysJSON    `json:"secret_keys"`
	Instances  []nodeInstanceJSON `json:"instances"`
	Interval   time.Duration      `json:"interval"`
	Host       string             `json:"host"`
	Boot       string             `json:"boot"`
	Duplicates []duplicateJSON    `json:"duplicates"`
}

type capabilitiesJSON struct {
	state.Capabilities
	CgroupControllers []string `json:"cgroup_controllers"`
	Namespaces        []string `json:"namespaces"`
	SandboxNote       string   `json:"sandbox_note"`
}

type secretKeysJSON struct {
	state.SecretKeys
	IDs []string `json:"ids"`
}

// nodeInstanceJSON is an instance of a heartbeat; Started is null until
// the node starts a process, as in app status.
type nodeInstanceJSON struct {
	state.Instance
	PID         int        `json:"pid"`
	Reason      string     `json:"reason"`
	Version     string     `json:"version"`
	Fingerprint string     `json:"fingerprint"`
	ExitCode    *int       `json:"exit_code"`
	Started     *time.Time `json:"started"`
	LandlockABI *int       `json:"landlock_abi"`
}

func instanceView(in state.Instance) nodeInstanceJSON {
	iv := nodeInstanceJSON{Instance: in, PID: in.PID, Reason: in.Reason, Version: in.Version, Fingerprint: in.Fingerprint, ExitCode: in.ExitCode, LandlockABI: in.LandlockABI}
	if !in.Started.IsZero() {
		iv.Started = &in.Started
	}
	return iv
}

type duplicateJSON struct {
	state.Duplicate
	Host string `json:"host"`
	Boot string `json:"boot"`
}

func nodeView(n state.Node) nodeJSON {
	v := nodeJSON{
		Node:               n,
		Labels:             n.Labels,
		SignaturesRequired: n.SignaturesRequired,
		TrustedKeys:        nonNil(n.TrustedKeys),
		SigningKeyFile:     n.SigningKeyFile,
		Instances:          []nodeInstanceJSON{},
		Interval:           n.Interval,
		Host:               n.Host,
		Boot:               n.Boot,
		Duplicates:         []duplicateJSON{},
		Capabilities: capabilitiesJSON{
			Capabilities:      n.Capabilities,
			CgroupControllers: nonNil(n.Capabilities.CgroupControllers),
			Namespaces:        nonNil(n.Capabilities.Namespaces),
			SandboxNote:       n.Capabilities.SandboxNote,
		},
	}
	if v.Labels == nil {
		v.Labels = map[string]string{}
	}
	if n.SecretKeys != nil {
		v.SecretKeys = &secretKeysJSON{SecretKeys: *n.SecretKeys, IDs: nonNil(n.SecretKeys.IDs)}
	}
	for _, in := range n.Instances {
		v.Instances = append(v.Instances, instanceView(in))
	}
	for _, d := range n.Duplicates {
		v.Duplicates = append(v.Duplicates, duplicateJSON{Duplicate: d, Host: d.Host, Boot: d.Boot})
	}
	return v
}

// warnNodes warns of what the heartbeats of nodes show to be wrong. What
// a heartbeat says is escaped: any NATS client that can write narun-nodes
// writes it, and it must not act on the terminal.
func (e *env) warnNodes(nodes []state.Node) {
	for _, n := range nodes {
		for _, d := range n.Duplicates {
			e.warnf("node id %s is used by two runners (hosts %s and %s): each hides the other; give each node its own node_id", cli.Shown(n.ID), cli.Shown(orDash(n.Host)), cli.Shown(orDash(d.Host)))
		}
		if skew := clockSkew(n); skew != 0 {
			way := "ahead of"
			if skew < 0 {
				way, skew = "behind", -skew
			}
			e.warnf("the clock of node %s is %s %s the NATS server's: its TLS certificate checks and the times of its logs and events are off; synchronise it (NTP, systemd-timesyncd)", cli.Shown(n.ID), shortDuration(skew), way)
		}
	}
}

// late reports whether node n missed three heartbeats: it stopped or lost
// NATS, though its entry lives until the bucket's TTL expires it. now is
// the NATS server's clock, which stamped n.Stored: the node's own clock
// may be off, and a node that keeps writing heartbeats is alive whatever
// time it writes in them. A heartbeat stamped more than an interval after
// now was stored before that clock went back (NTP stepped it, or a server
// whose clock is behind took the stream over): a live node has written
// one since, unless the step was within its interval, while a dead one's
// would look fresh, and outlive its TTL, for as long as the step.
func late(n state.Node, now time.Time) bool {
	age := now.Sub(n.Stored)
	return n.Interval > 0 && (age > 3*n.Interval+time.Second || age < -(n.Interval+time.Second))
}

// silence says how long node n has sent no heartbeat, after "no
// heartbeat" or "not heard from", for a node that is late.
func silence(n state.Node, now time.Time) string {
	if age := now.Sub(n.Stored); age < 0 {
		return fmt.Sprintf("since one stamped %s ahead of the NATS server's clock, which went back since", shortDuration(-age))
	}
	return "for " + shortDuration(now.Sub(n.Stored))
}

// minSkew is the least difference between a node's clock and the NATS
// server's that node list warns about.
const minSkew = 5 * time.Second

// clockSkew is how far node n's clock was ahead of the NATS server's
// (negative: behind) when it wrote its heartbeat, or 0 when within a few
// seconds. A heartbeat may wait up to its interval for NATS before it is
// stored, so a lag within that is no skew.
func clockSkew(n state.Node) time.Duration {
	if n.Stored.IsZero() || n.Time.IsZero() {
		return 0
	}
	skew := n.Time.Sub(n.Stored)
	if skew > minSkew || skew < -max(minSkew, n.Interval) {
		return skew
	}
	return 0
}

func labels(m map[string]string) string {
	if len(m) == 0 {
		return "-"
	}
	var kv []string
	for k, v := range m {
		kv = append(kv, k+"="+v)
	}
	sort.Strings(kv)
	return strings.Join(kv, ",")
}

func routeCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:  "route",
		Usage: "gateway routes registered by deployed apps",
		Subcommands: []*ucli.Command{
			{Name: "list", Aliases: []string{"ls"}, Usage: "routes in " + names.RoutesBucket, Flags: []ucli.Flag{jsonFlag()}, Action: action(stdio, true, routeList)},
		},
	}
}

// appRoute is a route with the app that registered it.
type appRoute struct {
	App string `json:"app"`
	config.Route
	// NotOurs says why the entry is not signed by ctl's key, when ctl
	// has one: gateways that trust only signed routes may ignore it.
	NotOurs string `json:"not_ours"`
}

// routeJSON is a route as route list --json prints it: with every key,
// where narun-routes leaves out what is unset. Timeout is "" when unset
// (the gateway's default), as the table's "-" says.
type routeJSON struct {
	appRoute
	Host        string   `json:"host"`
	Match       string   `json:"match"`
	Methods     []string `json:"methods"`
	StripPrefix bool     `json:"strip_prefix"`
	Timeout     string   `json:"timeout"`
	MaxBody     int64    `json:"max_body"`
}

func routeView(r appRoute) routeJSON {
	v := routeJSON{appRoute: r, Host: r.Host, Match: r.Match, Methods: nonNil(r.Methods), StripPrefix: r.StripPrefix, MaxBody: int64(r.MaxBody)}
	if r.Timeout > 0 {
		v.Timeout = r.Timeout.D().String()
	}
	return v
}

// appRoutes reads narun-routes: the routes of each app, by app name, and
// for each entry key does not sign, why (notOurs). An entry that is not
// valid JSON is logged and left out. A signature trailer is not JSON and
// is dropped once checked.
func (e *env) appRoutes(ctx context.Context, key *signing.Key) (routes map[string][]config.Route, unsigned map[string]string, err error) {
	routes, unsigned = map[string][]config.Route{}, map[string]string{}
	err = e.entries(ctx, names.RoutesBucket, "routes", func(app string, v []byte) {
		entry, err := gateway.DecodeEntry(app, signing.Strip(v))
		if err != nil {
			e.log.Warn("unreadable routes", "app", app, "err", err)
			return
		}
		routes[app] = entry.Routes
		if reason := notOurs(key, v); reason != "" {
			unsigned[app] = reason
		}
	})
	return routes, unsigned, err
}

func routeList(ctx context.Context, c *ucli.Context, e *env) error {
	key, err := e.signer()
	if err != nil {
		return err
	}
	byApp, unsigned, err := e.appRoutes(ctx, key)
	if err != nil {
		return err
	}
	all := []appRoute{}
	for _, app := range slices.Sorted(maps.Keys(byApp)) {
		for _, r := range byApp[app] {
			all = append(all, appRoute{App: app, Route: r, NotOurs: unsigned[app]})
		}
	}
	if c.Bool(flagJSON) {
		out := []routeJSON{}
		for _, r := range all {
			out = append(out, routeView(r))
		}
		return e.printJSON(out)
	}
	t := e.table("APP", "HOST", "PATH", "MATCH", "METHODS", "SERVICE", "TIMEOUT")
	for _, r := range all {
		timeout := "-"
		if r.Timeout > 0 {
			timeout = r.Timeout.D().String()
		}
		app := r.App
		switch {
		case r.NotOurs == "unsigned":
			app += " (unsigned)"
		case r.NotOurs != "":
			app += " (not ours)"
		}
		t.row(app, orDash(r.Host), r.Path, orDash(r.Match), orDash(strings.Join(r.Methods, ",")), r.Service, timeout)
	}
	if err := t.flush(); err != nil {
		return err
	}
	// A gateway's own routes are in its narun.toml, which it publishes
	// nowhere: ctl cannot tell whether any gateway has some, so the note
	// comes every time, an empty list and a partial one misleading alike.
	// On stderr, under the table: stdout stays the table a script may read.
	e.infof("only routes of deployed apps (%s) are listed, not those in a gateway's own narun.toml ([[gateway.routes]])", names.RoutesBucket)
	return nil
}

// nonNil is l, or an empty list for nil, which JSON prints as [].
func nonNil[T any](l []T) []T {
	if l == nil {
		return []T{}
	}
	return l
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func humanSize(n uint64) string {
	switch {
	case n >= 1<<30:
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 1, 64) + "GiB"
	case n >= 1<<20:
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + "MiB"
	case n >= 1<<10:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + "KiB"
	}
	return strconv.FormatUint(n, 10) + "B"
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04")
}

func completionCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "completion",
		Usage:     "print a bash completion script: source <(narun ctl completion bash)",
		ArgsUsage: "bash",
		Action: func(c *ucli.Context) error {
			if c.NArg() != 1 || c.Args().First() != "bash" {
				return usagef("only bash is supported: narun ctl completion bash")
			}
			_, err := fmt.Fprint(stdio.Stdout, bashCompletion)
			return err
		},
	}
}

// bashCompletion asks the binary itself (urfave/cli's
// --generate-bash-completion) for the words that may follow. urfave/cli
// completes flags from the last word before its flag when that starts
// with a dash, so a word being completed that does is passed too; "--"
// as "-" (urfave/cli would take "--" for the end of the flags and run
// the command), compgen then keeps the long flags.
const bashCompletion = `_narun_ctl_complete() {
  local cur words partial=()
  cur="${COMP_WORDS[COMP_CWORD]}"
  case "${cur}" in
    --) partial=(-) ;;
    -*) partial=("${cur}") ;;
  esac
  words=$("${COMP_WORDS[@]:0:$COMP_CWORD}" "${partial[@]}" --generate-bash-completion 2>/dev/null)
  COMPREPLY=($(compgen -W "${words}" -- "${cur}"))
  return 0
}
complete -o bashdefault -o default -F _narun_ctl_complete narun-ctl
complete -o bashdefault -o default -F _narun_ctl_complete narun
`
