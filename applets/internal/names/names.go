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
	EventsStream   = "NARUN_EVENTS"
	EventsSubjects = "narun.events.>"
)

// LeafLocal are the subjects a leaf device keeps to itself: its own
// JetStream domain has these streams, and so has its hub's. nats-server
// keeps $KV traffic apart across domains, but not the object stores' $O
// subjects, nor the log stream's: without this, every binary, file and log
// line of the hub would be stored on every leaf, and a hub's object of the
// same name would replace the leaf's. Nor does it keep JetStream's
// advisories apart: a runner takes one of narun-apps created or restored
// for its own bucket made anew, so every leaf's first start made the
// hub's runner, and every other leaf's, drop its watch and list its apps
// again.
var LeafLocal = []string{"$O." + BinariesBucket + ".>", "$O." + FilesBucket + ".>", LogsSubjects,
	"$JS.EVENT.ADVISORY.STREAM.*.KV_" + AppsBucket}

// LogSubject is where one output line of an instance is published.
func LogSubject(app, node, instance string) string {
	return "narun.logs." + app + "." + node + "." + instance
}

// EventSubject is where instance state changes of an app on a node are published.
func EventSubject(app, node string) string {
	return "narun.events." + app + "." + node
}

// streams are the JetStream streams that hold narun's state.
var streams = []string{
	"KV_" + AppsBucket, "KV_" + RoutesBucket, "KV_" + NodesBucket, "KV_" + SecretsBucket,
	"OBJ_" + BinariesBucket, "OBJ_" + FilesBucket, LogsStream, EventsStream,
}

// AppDenyPublish is what a NATS login with the app role may not publish:
// narun's state, events and logs, and the JetStream API of narun's
// streams, also under a JetStream domain's prefix ($JS.<domain>.API) that
// reaches the streams of a leaf or hub. Everything else stays allowed.
func AppDenyPublish() []string {
	deny := []string{
		"$KV." + AppsBucket + ".>", "$KV." + RoutesBucket + ".>", "$KV." + NodesBucket + ".>", "$KV." + SecretsBucket + ".>",
		"$O." + BinariesBucket + ".>", "$O." + FilesBucket + ".>",
		"narun.>",
	}
	for _, api := range []string{"$JS.API", "$JS.*.API"} {
		for _, s := range streams {
			deny = append(deny,
				api+".STREAM.*."+s,          // CREATE, UPDATE, INFO, DELETE, PURGE, SNAPSHOT, RESTORE
				api+".STREAM.*.*."+s,        // MSG.GET, MSG.DELETE, LEADER.STEPDOWN, PEER.REMOVE
				api+".CONSUMER.*."+s,        // CREATE, NAMES, LIST
				api+".CONSUMER.*."+s+".>",   // CREATE with a name, INFO, DELETE, PAUSE, RESET, UNPIN
				api+".CONSUMER.*.*."+s+".>", // DURABLE.CREATE, MSG.NEXT, LEADER.STEPDOWN
				api+".DIRECT.GET."+s,
				api+".DIRECT.GET."+s+".>",
			)
		}
	}
	return deny
}
