package runner

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/store"
	"github.com/narun/narun/embednats"
)

// CheckConfig refuses a [runner] table whose node would keep dropping out
// of narun-nodes: the bucket forgets a heartbeat store.NodeTTL after it was
// written, whatever the interval, and a node without one looks gone to
// node list, app status and deploy. Half the TTL leaves room for one
// heartbeat lost on the way.
//
// It also refuses a node id that is no name, a label no spec could select
// and a malformed trusted key, as the file's other bad values
// are refused, with the file and line, before the runner connects.
// Every problem is named, not only the first, so that one --check finds
// them all. nodeIDFlag says that --node-id set the node id: a bad one is
// then a usage error of the flag's, not the file's key.
func CheckConfig(cfg config.File, nodeIDFlag bool) error {
	where := func(key string) string {
		if w := cfg.Where(key); w != "" {
			return w + ": "
		}
		return ""
	}
	var errs []error
	if limit := store.NodeTTL / 2; cfg.Runner.HeartbeatInterval.D() > limit {
		errs = append(errs, fmt.Errorf("%skey %q: want at most %s, got %s: narun-nodes forgets a heartbeat %s after it was written, and the node would look gone between two",
			where("runner.heartbeat_interval"), "runner.heartbeat_interval", limit, cfg.Runner.HeartbeatInterval.D(), store.NodeTTL))
	}
	if id := cfg.Runner.NodeID; nodeIDFlag && id != "" {
		if err := spec.ValidName(id); err != nil {
			errs = append(errs, cli.Usage(fmt.Errorf("--node-id %q: %w", id, err)))
		}
	} else if _, err := nodeID(cfg.Runner); err != nil {
		errs = append(errs, fmt.Errorf("%skey %q: %w", where("runner.node_id"), "runner.node_id", err))
	}
	for _, name := range slices.Sorted(maps.Keys(cfg.Runner.Labels)) {
		if err := spec.CheckLabel(name, cfg.Runner.Labels[name]); err != nil {
			// The label's own key and line: the error about its value
			// does not name it, and a table may hold many.
			key := "runner.labels." + name
			errs = append(errs, fmt.Errorf("%skey %q: %w", where(key), key, err))
		}
	}
	if c, k := cfg.Runner.AppNATSCert, cfg.Runner.AppNATSKey; c == "" && k != "" {
		errs = append(errs, fmt.Errorf("%skey %q: set, but runner.app_nats_cert is empty: set both, the apps' certificate and its private key", where("runner.app_nats_key"), "runner.app_nats_key"))
	} else if c != "" && k == "" {
		errs = append(errs, fmt.Errorf("%skey %q: set, but runner.app_nats_key is empty: set both, the apps' certificate and its private key", where("runner.app_nats_cert"), "runner.app_nats_cert"))
	}
	// What apps are given to read: a wrong file would crash-loop every
	// app that uses NATS, each saying only its own error.
	for _, ca := range []struct{ key, file string }{{"runner.app_nats_ca", cfg.Runner.AppNATSCA}, {"runner.nats_ca", cfg.Runner.NATSCA}} {
		if ca.file == "" {
			continue
		}
		if err := embednats.CheckCA(ca.file); err != nil {
			errs = append(errs, fmt.Errorf("%skey %q: %w", where(ca.key), ca.key, err))
		}
	}
	if c, k := cfg.Runner.AppNATSCert, cfg.Runner.AppNATSKey; c != "" && k != "" {
		if err := embednats.CheckClientCert(c, k); err != nil {
			errs = append(errs, fmt.Errorf("%skey %q: %w", where("runner.app_nats_cert"), "runner.app_nats_cert", err))
		}
	}
	for i, pub := range cfg.Runner.TrustedKeys {
		if err := signing.CheckPublic(pub); err != nil {
			errs = append(errs, fmt.Errorf("%skey %q: %w", where("runner.trusted_keys"), fmt.Sprintf("runner.trusted_keys[%d]", i), err))
		}
	}
	return errors.Join(errs...)
}
