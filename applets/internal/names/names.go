// Package names holds the NATS bucket, stream and subject names that form
// narun's user-facing contract (shared/CONTRACT.md), so no applet spells
// them on its own.
package names

const (
	AppsBucket     = "narun-apps"
	NodesBucket    = "narun-nodes"
	RoutesBucket   = "narun-routes"
	SecretsBucket  = "narun-secrets"
	BinariesBucket = "narun-binaries"
	FilesBucket    = "narun-files"
	LogsStream     = "NARUN_LOGS"
	LogsSubjects   = "narun.logs.>"
)

// LeafLocal are the subjects a leaf device keeps to itself: its own
// JetStream domain has these streams, and so has its hub's. nats-server
// keeps $KV traffic apart across domains, but not the object stores' $O
// subjects, nor the log stream's: without this, every binary, file and log
// line of the hub would be stored on every leaf, and a hub's object of the
// same name would replace the leaf's.
var LeafLocal = []string{"$O." + BinariesBucket + ".>", "$O." + FilesBucket + ".>", LogsSubjects}

// LogSubject is where one output line of an instance is published.
func LogSubject(app, node, instance string) string {
	return "narun.logs." + app + "." + node + "." + instance
}

// EventSubject is where instance state changes of an app on a node are published.
func EventSubject(app, node string) string {
	return "narun.events." + app + "." + node
}
