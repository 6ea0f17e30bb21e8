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

// LogSubject is where one output line of an instance is published.
func LogSubject(app, node, instance string) string {
	return "narun.logs." + app + "." + node + "." + instance
}

// EventSubject is where instance state changes of an app on a node are published.
func EventSubject(app, node string) string {
	return "narun.events." + app + "." + node
}
