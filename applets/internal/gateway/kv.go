package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/signing"
	"github.com/narun/narun/applets/internal/store"
)

// watchRoutes follows the narun-routes bucket, written by `narun ctl
// deploy`. The bucket is created when missing, so the first deploy's routes
// are seen at once rather than at the next retry; NATS may be away: that is
// retried, never fatal.
func (g *Gateway) watchRoutes(ctx context.Context) {
	js, err := jetstream.New(g.nc)
	if err != nil {
		g.log.Error("routes bucket: jetstream", "err", err)
		return
	}
	retry := time.NewTimer(0)
	defer retry.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-retry.C:
		}
		if err := g.followRoutes(ctx, js); err != nil && ctx.Err() == nil {
			// A NATS without JetStream has no deployed routes to read:
			// the configuration's are all there are, and /readyz says so.
			if noJetStream(err) && !g.routesRead.Swap(true) {
				g.log.Info("no JetStream on this NATS: serving the configuration's routes only, until it has", "err", err)
			}
			g.log.Debug("routes bucket not followed, retrying", "bucket", names.RoutesBucket, "err", err)
		}
		retry.Reset(3 * time.Second)
	}
}

// noJetStream reports whether err says that no server offers JetStream.
func noJetStream(err error) bool {
	return errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrJetStreamNotEnabled) ||
		errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount)
}

func (g *Gateway) followRoutes(ctx context.Context, js jetstream.JetStream) error {
	kv, err := store.KV(ctx, js, names.RoutesBucket, g.log)
	if err != nil {
		return err
	}
	w, err := kv.WatchAll(ctx)
	if err != nil {
		return err
	}
	defer func() { _ = w.Stop() }()
	for {
		select {
		case <-ctx.Done():
			return nil
		case e, ok := <-w.Updates():
			if !ok {
				return nil
			}
			if e == nil {
				g.routesRead.Store(true)
				continue
			}
			if e.Operation() != jetstream.KeyValuePut {
				g.setAppEntry(e.Key(), nil)
				continue
			}
			g.setAppEntry(e.Key(), e.Value())
		}
	}
}

// appRoutes reads the narun-routes entry of app; nil when it is refused or
// not valid JSON, which loses that app's routes only. The signature's
// trailer goes even when no key is trusted, for JSON cannot hold it.
func (g *Gateway) appRoutes(signatures *signing.Verifier, app string, value []byte) []config.Route {
	body, err := signatures.Verify(value)
	if err != nil {
		g.log.Error("ignoring routes of app: entry refused", "app", app, "err", err)
		return nil
	}
	var routes []config.Route
	if err := json.Unmarshal(body, &routes); err != nil {
		g.log.Error("ignoring routes of app: bad JSON in routes bucket", "app", app, "err", err)
		return nil
	}
	if routes == nil {
		routes = []config.Route{}
	}
	return routes
}
