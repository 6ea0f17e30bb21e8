package runner

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"time"

	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/supervisor"
	"github.com/narun/narun/consumer"
)

var semverRe = regexp.MustCompile(`^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?$`)

// startBridge registers a NATS Micro service that forwards the gateway's
// requests to a plain-HTTP app on 127.0.0.1:[http] port. Each instance has
// its own registration in the service's queue group, so the gateway spreads
// requests over the instances that are healthy.
func (in *instance) startBridge(r *Runner, sp *spec.App, id string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.bridge != nil {
		return
	}
	in.runBridge(r, sp, id, nil)
}

// runBridge starts the bridge on the subject in.service names; done of a
// bridge it replaces, if any, is waited for before its own closes, so that
// a stop still waits for the requests in flight of both. in.mu must be
// held.
func (in *instance) runBridge(r *Runner, sp *spec.App, id string, replaced <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	in.bridge, in.bridgeDone = cancel, done
	in.bridgeSpec, in.bridgeID = sp, id

	target := &url.URL{Scheme: "http", Host: net.JoinHostPort("127.0.0.1", strconv.Itoa(sp.HTTP.Port))}
	cfg := consumer.Config{
		Name:        sp.Name,
		Version:     "0.0.0",
		Description: "plain HTTP app " + sp.Name + " bridged by the narun runner",
		Metadata:    map[string]string{"node": r.node, "app_version": sp.Version, instanceMetadata: id},
		Subject:     in.service,
	}
	if semverRe.MatchString(sp.Version) {
		cfg.Version = sp.Version
	}
	log := r.log.With("app", sp.Name)
	go func() {
		defer func() {
			if replaced != nil {
				<-replaced
			}
			close(done)
		}()
		// Called here, not above: startBridge runs inside the
		// supervisor's status update, which Dial would wait for.
		proxy, tr := bridgeProxy(target, in.sup.Dial(), log.With("instance", id))
		defer tr.CloseIdleConnections()
		err := consumer.Serve(ctx, r.opts.Conn, cfg, proxy)
		if err != nil && !errors.Is(err, context.Canceled) {
			log.Error("http bridge stopped", "err", err)
		}
	}()
}

// bridgeService is the subject the bridge of an app of spec sp serves:
// that of its first route, to which the gateway sends the route's
// requests; "" for the app's name.
func bridgeService(sp *spec.App) string {
	if len(sp.Routes) > 0 {
		return sp.Routes[0].Service
	}
	return ""
}

// moveBridge has the bridge serve service from now on. [[routes]] is not
// in the fingerprint: a spec that names another service for the route
// restarts no instance, yet the gateway sends the route's requests to the
// new subject at once, which a bridge left on the old one would never
// answer. A bridge that runs is registered again on the new subject.
func (in *instance) moveBridge(r *Runner, service string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.service == service {
		return
	}
	in.service = service
	if in.bridge == nil {
		return
	}
	in.bridge()
	replaced := in.bridgeDone
	in.runBridge(r, in.bridgeSpec, in.bridgeID, replaced)
}

// bridgeProxy forwards to the app at target through dial. ReverseProxy
// flushes streamed responses (no length, event streams) as they come and
// sends the others whole, in one NATS reply. Its failures go to log:
// left to it, it writes them with the standard logger, a line without
// level or app among narun's (and no JSON line in a JSON log).
func bridgeProxy(target *url.URL, dial supervisor.DialFunc, log *slog.Logger) (*httputil.ReverseProxy, *http.Transport) {
	tr := &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, IdleConnTimeout: 90 * time.Second}
	return &httputil.ReverseProxy{
		Rewrite: func(pr *httputil.ProxyRequest) {
			pr.SetURL(target)
			pr.Out.Host = pr.In.Host
			pr.SetXForwarded()
		},
		Transport: tr,
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelWarn),
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			// A request the gateway gave up on (its client left, its
			// timeout passed) is no failure of the app's.
			if r.Context().Err() == nil {
				log.Warn("http app did not answer a request; the gateway's client gets 502",
					"addr", target.Host, "request_id", r.Header.Get("X-Request-Id"), "err", err)
			}
			w.WriteHeader(http.StatusBadGateway)
		},
	}, tr
}

// stopBridge withdraws the service registration; the returned channel is
// closed once the requests in flight are done (nil when there was none).
func (in *instance) stopBridge() <-chan struct{} {
	in.mu.Lock()
	defer in.mu.Unlock()
	if in.bridge == nil {
		return nil
	}
	in.bridge()
	done := in.bridgeDone
	in.bridge, in.bridgeDone = nil, nil
	return done
}

// waitBridge waits for a bridge to finish its requests in flight, for a
// bounded time: a stuck request must not hold a stop back for ever.
func waitBridge(done <-chan struct{}) {
	if done == nil {
		return
	}
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}
