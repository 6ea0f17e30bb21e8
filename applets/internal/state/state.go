// Package state holds the JSON shapes of narun's runtime state shared by the
// runner, which writes them, and ctl and the web pages, which read them: node
// heartbeats in the narun-nodes bucket, instance statuses, the events
// published on narun.events.<app>.<node> and the log lines published on
// narun.logs.<app>.<node>.<instance>.
package state

import (
	"time"

	"github.com/narun/narun/sandbox"
)

// State is where an instance is in its life cycle.
//
//	pending → fetching → starting → running → healthy → stopping → stopped
//	running|healthy → crashed → backoff → starting
//	running|healthy → stopping → backoff → starting (stopped as unhealthy)
//	running|healthy → backoff → starting (ended with status 0, restart "always")
//	any → failed (gave up; Reason says why)
type State string

// The states of an instance.
const (
	Pending  State = "pending"
	Fetching State = "fetching"
	Starting State = "starting"
	Running  State = "running"
	Healthy  State = "healthy"
	Stopping State = "stopping"
	Stopped  State = "stopped"
	Crashed  State = "crashed"
	Backoff  State = "backoff"
	Failed   State = "failed"
)

// All lists every State, in the order of the life cycle: a consumer that
// reports each one (a metric per state, 0 where no instance is in it)
// takes them from here, so a new State is added in one place.
func All() []State {
	return []State{Pending, Fetching, Starting, Running, Healthy, Stopping, Stopped, Crashed, Backoff, Failed}
}

// Final reports whether an instance in s will not change again by itself.
func (s State) Final() bool { return s == Stopped || s == Failed }

// Up reports whether a process of the instance is alive in state s.
func (s State) Up() bool { return s == Running || s == Healthy || s == Stopping }

// Instance is the status of one instance of an app on one node.
type Instance struct {
	App  string `json:"app"`
	Node string `json:"node"`
	// ID is unique on the node and a valid NATS subject token.
	ID    string `json:"id"`
	Slot  int    `json:"slot"`
	State State  `json:"state"`
	// PID is the process id while a process is alive, else 0.
	PID int `json:"pid,omitempty"`
	// Restarts counts process starts after the first one.
	Restarts int `json:"restarts"`
	// Reason explains the last failure, crash or stop.
	Reason  string `json:"reason,omitempty"`
	Version string `json:"version,omitempty"`
	// Fingerprint identifies the part of the spec this instance runs with.
	Fingerprint string `json:"fingerprint,omitempty"`
	// ExitCode is the last exit status; -1 when killed by a signal.
	ExitCode *int `json:"exit_code,omitempty"`
	// Started is when the current process started; zero when none runs.
	Started time.Time `json:"started,omitzero"`
	Healthy bool      `json:"healthy"`
	// LandlockABI is the Landlock ABI a sandboxed instance runs under (0:
	// unconfined, the best-effort degrade); nil in mode "exec".
	LandlockABI *int `json:"landlock_abi,omitempty"`
	// Since is when the instance entered State.
	Since time.Time `json:"since"`
}

// Capabilities are the isolation features of a node's kernel, as the
// sandbox package probes them; Sandbox is also false when the runner does
// not run sandboxes itself.
type Capabilities = sandbox.Capabilities

// Node is the heartbeat of a runner, stored in narun-nodes under its id.
type Node struct {
	ID           string            `json:"id"`
	Version      string            `json:"version"`
	OS           string            `json:"os"`
	Arch         string            `json:"arch"`
	Labels       map[string]string `json:"labels,omitempty"`
	Capabilities Capabilities      `json:"capabilities"`
	// SignaturesRequired says the runner runs only specs a trusted key
	// signed, so that ctl can tell a deploy without a key that it will not
	// run there. Not a Capabilities field: those are the kernel's.
	SignaturesRequired bool `json:"signatures_required,omitempty"`
	// TrustedKeys are the public keys the runner trusts (trusted_keys).
	TrustedKeys []string `json:"trusted_keys,omitempty"`
	// SigningKeyFile is the path of the node key of narun up, when it
	// signs with one: narun ctl on the same machine, as the same user,
	// finds it there without being told narun up's data dir. A path only:
	// the file is its owner's.
	SigningKeyFile string `json:"signing_key_file,omitempty"`
	// SecretKeys says which keys the runner's secret key file holds, so
	// that ctl can warn of a secret sealed with a key this node lacks,
	// whose apps would fail at every start here. Nil from a runner of an
	// earlier release: it says nothing either way.
	SecretKeys *SecretKeys `json:"secret_keys,omitempty"`
	Instances  []Instance  `json:"instances"`
	// Started is when the runner started.
	Started time.Time `json:"started"`
	// Time is when this heartbeat was written, by the node's clock.
	Time time.Time `json:"time"`
	// Stored is when the NATS server stored this heartbeat, by the clock
	// of the server that holds the bucket: readers set it from the KV
	// entry, the runner leaves it out. A heartbeat's age is judged by it,
	// so that a node whose clock is wrong still looks alive while it
	// writes heartbeats.
	Stored time.Time `json:"stored,omitzero"`
	// Interval is how often the runner writes its heartbeat: one much
	// older than that is from a node that stopped, though its entry has
	// not expired yet.
	Interval time.Duration `json:"interval,omitempty"`
	// Host is the host name of the runner's machine.
	Host string `json:"host,omitempty"`
	// Boot is random and new at every start of a runner: a heartbeat of
	// another boot replacing this one's is another runner with the same id.
	Boot string `json:"boot,omitempty"`
	// Duplicates are the other runners found writing this node's
	// heartbeat lately: they use the same node id, so each hides the other
	// from app status and node list.
	Duplicates []Duplicate `json:"duplicates,omitempty"`
	// AwaitingSpecs says the runner has started and not yet read the app
	// specs (narun-apps, or its cached copies when that does not answer):
	// the instances it lists are not yet all it will run. Right after a
	// restart, an app would otherwise look undeployed on the node.
	AwaitingSpecs bool `json:"awaiting_specs,omitempty"`
}

// SecretKeys are the ids of the keys of a node's secret key ring. An id is
// a digest prefix of its key (secrets.KeyID), which sealed values name in
// the clear: it reveals nothing of the key.
type SecretKeys struct {
	// File says that the runner has a key file ([runner] master_key_file).
	File bool `json:"file"`
	// IDs are the ids of its keys, the one that seals first; none when the
	// file cannot be read (missing, readable by others, malformed).
	IDs []string `json:"ids,omitempty"`
}

// Duplicate is another runner that writes the heartbeat of a node.
type Duplicate struct {
	Host string `json:"host,omitempty"`
	Boot string `json:"boot,omitempty"`
	// Seen is when its heartbeat was last found.
	Seen time.Time `json:"seen"`
}

// Event is an instance state change, published on
// narun.events.<app>.<node>.
type Event struct {
	Instance
	// Time is when the change happened.
	Time time.Time `json:"time"`
}

// Log stream names. Narun is the runner's own lines about an instance's
// output (lines it dropped): an app writes only to the other two, so it
// cannot print a line that passes for the runner's.
const (
	Stdout = "stdout"
	Stderr = "stderr"
	Narun  = "narun"
)

// LogLine is one line of an instance's output, published as JSON on
// narun.logs.<app>.<node>.<instance>. A line longer than the runner's
// maximum is split; every part but the last has Partial set.
type LogLine struct {
	Time     time.Time `json:"time"`
	App      string    `json:"app"`
	Node     string    `json:"node"`
	Instance string    `json:"instance"`
	// Stream is "stdout" or "stderr".
	Stream  string `json:"stream"`
	Line    string `json:"line"`
	Partial bool   `json:"partial,omitempty"`
}
