package consumer_test

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
	"github.com/narun/narun/embednats/natstest"
)

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// waitServing waits until the server has a subscriber on subject, as Serve
// gives no signal when it has subscribed.
func waitServing(t testing.TB, srv *embednats.Server, subject string) {
	t.Helper()
	waitFor(t, "a subscriber on "+subject, func() bool { return srv.NATS().GlobalAccount().SubscriptionInterest(subject) })
}

// start serves h and returns a client connection and a stop function that
// returns Serve's result.
func start(t testing.TB, cfg consumer.Config, h http.Handler) (*embednats.Server, *nats.Conn, func() error) {
	t.Helper()
	srv := natstest.Start(t)
	svc := natstest.Connect(t, srv)
	nc := natstest.Connect(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Serve(ctx, svc, cfg, h) }()
	subject := cfg.Subject
	if subject == "" {
		subject = cfg.Name
	}
	waitServing(t, srv, subject)
	var once sync.Once
	var err error
	stop := func() error {
		once.Do(func() { cancel(); err = <-done })
		return err
	}
	t.Cleanup(func() { _ = stop() })
	return srv, nc, stop
}

// serve runs Serve on svc, a connection of the test's own, until the test
// ends.
func serve(t *testing.T, svc *nats.Conn, cfg consumer.Config, h http.Handler) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Serve(ctx, svc, cfg, h) }()
	t.Cleanup(func() { cancel(); <-done })
}

// failingOver starts a server with an 8 MiB max_payload and one with the
// default 1 MiB, and a service connection to the first that fails over to
// the second when the first goes; reconnected receives once it has.
func failingOver(t *testing.T) (large, small *embednats.Server, svc *nats.Conn, reconnected <-chan struct{}) {
	t.Helper()
	large = natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", MaxPayload: 8 << 20})
	small = natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	again := make(chan struct{}, 1)
	svc, err := nats.Connect(large.ClientURL()+","+small.ClientURL(), nats.DontRandomize(), nats.MaxReconnects(-1), nats.ReconnectWait(10*time.Millisecond),
		nats.ReconnectHandler(func(*nats.Conn) {
			select {
			case again <- struct{}{}:
			default:
			}
		}))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	return large, small, svc, again
}

func request(nc *nats.Conn, subject, path string) (*nats.Msg, error) {
	return nc.RequestMsg(&nats.Msg{Subject: subject, Header: nats.Header{consumer.HeaderPath: {path}}}, 10*time.Second)
}

func TestConfigValidation(t *testing.T) {
	srv := natstest.Start(t)
	nc := natstest.Connect(t, srv)
	for _, cfg := range []consumer.Config{
		{}, {Name: "bad name"}, {Name: "ok", Version: "v1"}, {Name: "ok", Subject: "a.*"}, {Name: "ok", Subject: "a..b"},
		{Name: "ok", Subject: "$SRV.PING"}, {Name: "ok", Subject: "_NARUN.cancel.x"}, {Name: "ok", QueueGroup: "bad group"},
		{Name: "ok", QueueGroup: "a.*"}, {Name: "ok", MaxConcurrent: -1},
		// Not SemVer, which nats.go/micro refuses too.
		{Name: "ok", Version: "1.0.0-01"}, {Name: "ok", Version: "1.0.0-a..b"}, {Name: "ok", Version: "1.0.0+."}, {Name: "ok", Version: "1.0.0-.x"},
	} {
		// Cancelled: a config taken for valid would return at once too.
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		err := consumer.Serve(ctx, nc, cfg, http.NotFoundHandler())
		if !errors.Is(err, consumer.ErrConfig) {
			t.Errorf("Serve(%+v) = %v, want ErrConfig", cfg, err)
		}
	}
}

// A connection closed while Serve registers its subscriptions ends Serve
// with ErrConnClosed, whichever step saw the close.
func TestCloseDuringRegistrationIsErrConnClosed(t *testing.T) {
	srv := natstest.Start(t)
	for i := range 300 {
		nc, err := srv.Connect()
		if err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			done <- consumer.Serve(context.Background(), nc, consumer.Config{Name: "cr"}, http.NotFoundHandler())
		}()
		for range i % 40 {
			runtime.Gosched()
		}
		nc.Close()
		select {
		case err := <-done:
			if !errors.Is(err, consumer.ErrConnClosed) {
				t.Fatalf("closed after %d yields: Serve = %v, want ErrConnClosed", i%40, err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return after Close")
		}
	}
}

// The runner takes a ping's answer as "ready", so the request subject must
// be subscribed before the discovery verbs. nats.go numbers a connection's
// subscriptions in the order it sends them, which makes the order visible.
func TestRequestsSubscribedBeforeThePingAnswers(t *testing.T) {
	srv := natstest.Start(t)
	svc := natstest.Connect(t, srv)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- consumer.Serve(ctx, svc, consumer.Config{Name: "order"}, http.NotFoundHandler()) }()
	defer func() { cancel(); <-done }()
	waitServing(t, srv, "$SRV.PING")
	conns, err := srv.NATS().Connz(&server.ConnzOptions{SubscriptionsDetail: true})
	if err != nil {
		t.Fatal(err)
	}
	sids := map[string]int{}
	for _, c := range conns.Conns {
		for _, sub := range c.SubsDetail {
			n, err := strconv.Atoi(sub.Sid)
			if err != nil {
				t.Fatalf("sid %q of %s: %v", sub.Sid, sub.Subject, err)
			}
			sids[sub.Subject] = n
		}
	}
	req, ping := sids["order"], sids["$SRV.PING"]
	if req == 0 || ping == 0 {
		t.Fatalf("subscriptions %v: want both order and $SRV.PING", sids)
	}
	if req > ping {
		t.Errorf("request subject subscribed after $SRV.PING (sid %d > %d)", req, ping)
	}
}

func TestPoolIsBoundedAndConcurrent(t *testing.T) {
	const limit = 3
	var cur, peak atomic.Int32
	release := make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "pool", MaxConcurrent: limit}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := cur.Add(1)
		for {
			p := peak.Load()
			if n <= p || peak.CompareAndSwap(p, n) {
				break
			}
		}
		<-release
		cur.Add(-1)
	}))
	var wg sync.WaitGroup
	var failures atomic.Int32
	for range 2 * limit {
		wg.Go(func() {
			m, err := request(nc, "pool", "/")
			if err != nil || m.Header.Get(consumer.HeaderStatus) != "" {
				failures.Add(1)
			}
		})
	}
	waitFor(t, "the pool to fill", func() bool { return cur.Load() == limit })
	close(release)
	wg.Wait()
	if peak.Load() != limit || failures.Load() != 0 {
		t.Errorf("peak concurrency %d (want %d), %d failures", peak.Load(), limit, failures.Load())
	}
}

func TestDrainFinishesInFlight(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	_, nc, stop := start(t, consumer.Config{Name: "drain"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-release
		w.WriteHeader(http.StatusAccepted)
	}))
	reply := make(chan *nats.Msg, 1)
	go func() {
		m, err := request(nc, "drain", "/")
		if err != nil {
			t.Error(err)
		}
		reply <- m
	}()
	<-entered
	stopped := make(chan error, 1)
	go func() { stopped <- stop() }()
	// Draining: no new request reaches the service.
	waitFor(t, "the subscription to go", func() bool {
		_, err := request(nc, "drain", "/")
		return errors.Is(err, nats.ErrNoResponders)
	})
	select {
	case err := <-stopped:
		t.Fatalf("Serve returned (%v) with a request in flight", err)
	default:
	}
	close(release)
	if m := <-reply; m == nil || m.Header.Get(consumer.HeaderStatus) != "202" {
		t.Errorf("in-flight reply %+v, want 202", m)
	}
	if err := <-stopped; err != nil {
		t.Errorf("Serve = %v, want nil", err)
	}
}

func TestBadHeadAndPanic(t *testing.T) {
	reported := make(chan error, 10)
	_, nc, _ := start(t, consumer.Config{Name: "bad", ErrorHandler: func(err error) { reported <- err }}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	}))
	t.Cleanup(func() {
		// The panic reaches the ErrorHandler with its stack, as net/http
		// logs one.
		select {
		case err := <-reported:
			if msg := err.Error(); !strings.Contains(msg, "panic serving GET /: boom") || !strings.Contains(msg, "goroutine ") {
				t.Errorf("panic reported as %q, want the request and a stack", msg)
			}
		default:
			t.Error("panic not reported to the ErrorHandler")
		}
	})
	tests := []struct {
		name string
		h    nats.Header
		code string
	}{
		{"method", nats.Header{consumer.HeaderMethod: {"GE T"}}, "400"},
		{"path", nats.Header{consumer.HeaderPath: {"relative"}}, "400"},
		{"timeout", nats.Header{consumer.HeaderTimeout: {"-5"}}, "400"},
		{"proto", nats.Header{consumer.HeaderProto: {"SPDY"}}, "400"},
		{"panic", nats.Header{consumer.HeaderPath: {"/"}}, "500"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := nc.RequestMsg(&nats.Msg{Subject: "bad", Header: tc.h}, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			if got := m.Header.Get(consumer.HeaderServiceErrorCode); got != tc.code {
				t.Errorf("error code %q, want %q (%s)", got, tc.code, m.Header.Get(consumer.HeaderServiceError))
			}
		})
	}
}

func TestTimeoutBecomesDeadline(t *testing.T) {
	got := make(chan time.Duration, 1)
	_, nc, _ := start(t, consumer.Config{Name: "dl"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, ok := r.Context().Deadline()
		if !ok {
			got <- -1
			return
		}
		got <- time.Until(dl)
	}))
	if _, err := nc.RequestMsg(&nats.Msg{Subject: "dl", Header: nats.Header{consumer.HeaderTimeout: {strconv.Itoa(60_000)}}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := <-got; d <= 0 || d > time.Minute {
		t.Errorf("handler deadline in %v, want within the minute given", d)
	}
}

// TestNoTimeoutStillHasDeadline sends a request as by hand, without
// Narun-Timeout, to a handler that streams: its requester reads the head
// and leaves, so no ack ever comes, and only a deadline keeps the worker
// (and Serve's return) from waiting for one for ever.
func TestNoTimeoutStillHasDeadline(t *testing.T) {
	got := make(chan time.Duration, 1)
	_, nc, _ := start(t, consumer.Config{Name: "nodl"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		dl, ok := r.Context().Deadline()
		if !ok {
			dl = time.Time{}
		}
		got <- time.Until(dl)
		w.(http.Flusher).Flush()
	}))
	if _, err := request(nc, "nodl", "/"); err != nil {
		t.Fatal(err)
	}
	if d := <-got; d <= 0 || d > 30*time.Second {
		t.Errorf("handler deadline in %v, want the default of 30s", d)
	}
}

func TestConnClosedEndsServe(t *testing.T) {
	srv := natstest.Start(t)
	svc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- consumer.Serve(context.Background(), svc, consumer.Config{Name: "gone"}, http.NotFoundHandler())
	}()
	nc := natstest.Connect(t, srv)
	waitFor(t, "service ping", func() bool {
		_, err := nc.Request("$SRV.PING.gone", nil, time.Second)
		return err == nil
	})
	svc.Close()
	if err := <-done; !errors.Is(err, consumer.ErrConnClosed) {
		t.Errorf("Serve = %v, want ErrConnClosed", err)
	}
	// Closed before Serve: the same.
	if err := consumer.Serve(context.Background(), svc, consumer.Config{Name: "gone"}, http.NotFoundHandler()); !errors.Is(err, consumer.ErrConnClosed) {
		t.Errorf("Serve on a closed connection = %v, want ErrConnClosed", err)
	}
}

// With no NATS server to reach, ListenAndServe says so to the ErrorHandler
// (once), and a stop meanwhile is a clean stop.
func TestListenAndServeWithoutNATS(t *testing.T) {
	down := natstest.FreeAddr(t)
	t.Setenv("NARUN_NATS_URL", "nats://"+down)
	reported := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.ListenAndServe(ctx, consumer.Config{Name: "alone", ErrorHandler: func(err error) { reported <- err }}, http.NotFoundHandler())
	}()
	select {
	case err := <-reported:
		if !strings.Contains(err.Error(), "nats not reachable, retrying") || !strings.Contains(err.Error(), "connection refused") {
			t.Errorf("reported %v, want why NATS is out of reach", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("nothing reported while NATS is out of reach")
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("stop while NATS is out of reach: %v, want nil", err)
	}
	if len(reported) != 0 {
		t.Errorf("reported more than once: %v", <-reported)
	}
}

// A service started before NATS learns max_payload late; it must still
// answer a small response in one message (it once streamed it byte by byte).
func TestStartedBeforeNATS(t *testing.T) {
	addr := natstest.FreeAddr(t)
	svc, err := nats.Connect("nats://"+addr, nats.RetryOnFailedConnect(true), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(svc.Close)
	serve(t, svc, consumer.Config{Name: "early"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("x"), 1000))
	}))
	srv := natstest.StartConfig(t, embednats.Config{Listen: addr})
	nc := natstest.Connect(t, srv)
	waitServing(t, srv, "early")
	m, err := request(nc, "early", "/")
	if err != nil {
		t.Fatal(err)
	}
	if m.Header.Get(consumer.HeaderBody) != "" || len(m.Data) != 1000 {
		t.Errorf("reply: body mode %q, %d bytes; want the whole 1000 bytes in one message", m.Header.Get(consumer.HeaderBody), len(m.Data))
	}
}

func TestListenAndServeSaysWhyNATSClosed(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{{User: "app", Password: "right"}}})
	t.Setenv("NARUN_NATS_URL", strings.Replace(srv.ClientURL(), "nats://", "nats://app:wrong@", 1))
	err := consumer.ListenAndServe(context.Background(), consumer.Config{Name: "refused"}, http.NotFoundHandler())
	if !errors.Is(err, consumer.ErrConnClosed) || !strings.Contains(strings.ToLower(err.Error()), "authorization") {
		t.Fatalf("ListenAndServe with refused credentials = %v, want ErrConnClosed naming the authorization error", err)
	}
}

// An app's error reaches its logs: the logins of NARUN_NATS_URL stay out
// of it, also when nats.go quotes a URL it cannot parse.
func TestListenAndServeHidesLogins(t *testing.T) {
	for _, url := range []string{
		"nats://app:s3cret@127.0.0.1:4222,nats://h:x:y",
		"nats://app:s3cret@127.0.0.1:x",
		"nats://app:s3/cret@127.0.0.1:4222",
		"nats://s3cret@127.0.0.1:x",
	} {
		t.Setenv("NARUN_NATS_URL", url)
		err := consumer.ListenAndServe(context.Background(), consumer.Config{Name: "hidden"}, http.NotFoundHandler())
		if err == nil || strings.Contains(err.Error(), "s3") || !strings.Contains(err.Error(), "xxxxx@127.0.0.1") {
			t.Errorf("ListenAndServe with NARUN_NATS_URL %s = %v, want an error that shows the server but not the password", url, err)
		}
	}
}

// ListenAndServe tries the servers of NARUN_NATS_URL in the order given:
// the runner lists its device's own server first. The listeners here
// accept and hang up, and say which one was tried first.
func TestListenAndServeKeepsServerOrder(t *testing.T) {
	first := make(chan int, 1)
	var urls []string
	for i := range 10 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { l.Close() })
		urls = append(urls, "nats://"+l.Addr().String())
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				select {
				case first <- i:
				default:
				}
				c.Close()
			}
		}()
	}
	t.Setenv("NARUN_NATS_URL", strings.Join(urls, ","))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		// It cannot connect: only the order of the attempts matters.
		_ = consumer.ListenAndServe(ctx, consumer.Config{Name: "order"}, http.NotFoundHandler())
	}()
	select {
	case i := <-first:
		if i != 0 {
			t.Errorf("first server tried is number %d of the list, want the first", i)
		}
	case <-time.After(10 * time.Second):
		t.Error("no server tried")
	}
	cancel()
	<-done
}

func TestListenAndServeReadsRunnerEnvironment(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	t.Setenv("NARUN_NATS_URL", srv.ClientURL())
	t.Setenv("NARUN_INSTANCE", "hello-n1-0")
	t.Setenv("NARUN_NODE", "n1")
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.ListenAndServe(ctx, consumer.Config{Name: "envsvc", Metadata: map[string]string{"narun_node": "set-by-app"}},
			http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	}()
	nc := natstest.Connect(t, srv)
	var info micro.Info
	waitFor(t, "service info", func() bool {
		m, err := nc.Request("$SRV.INFO.envsvc", nil, time.Second)
		return err == nil && json.Unmarshal(m.Data, &info) == nil
	})
	if got := info.Metadata["narun_instance"]; got != "hello-n1-0" {
		t.Errorf("narun_instance = %q, want the NARUN_INSTANCE value", got)
	}
	if got := info.Metadata["narun_node"]; got != "set-by-app" {
		t.Errorf("narun_node = %q, want the app's own value to win over NARUN_NODE", got)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("ListenAndServe after cancel: %v", err)
	}
}

// The version deployed (NARUN_APP_VERSION) is what `nats micro info`
// shows of a service that sets none, rather than 0.0.0 for every app; a
// spec's version that is not SemVer, which micro refuses, is in the
// metadata only.
func TestListenAndServeTakesTheDeployedVersion(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0"})
	t.Setenv("NARUN_NATS_URL", srv.ClientURL())
	nc := natstest.Connect(t, srv)
	for _, tc := range []struct{ name, env, set, version string }{
		{"semver", "2.3.4-rc.1", "", "2.3.4-rc.1"},
		{"not-semver", "2026.12", "", "0.0.0"},
		{"set-by-app", "2.3.4", "1.0.0", "1.0.0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NARUN_APP_VERSION", tc.env)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			name := "versvc-" + tc.name
			go func() {
				done <- consumer.ListenAndServe(ctx, consumer.Config{Name: name, Version: tc.set},
					http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
			}()
			var info micro.Info
			waitFor(t, "service info", func() bool {
				m, err := nc.Request("$SRV.INFO."+name, nil, time.Second)
				return err == nil && json.Unmarshal(m.Data, &info) == nil
			})
			if info.Version != tc.version {
				t.Errorf("version %q, want %q", info.Version, tc.version)
			}
			if got := info.Metadata["narun_version"]; got != tc.env {
				t.Errorf("narun_version = %q, want the NARUN_APP_VERSION value %q", got, tc.env)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ListenAndServe after cancel: %v", err)
			}
		})
	}
}

// TestHTTPSClientSetsTLS checks that a request the gateway got over TLS
// (Narun-Scheme: https) reaches the handler with r.TLS set, as net/http's
// server would hand it over, and a plain one without.
func TestHTTPSClientSetsTLS(t *testing.T) {
	type seen struct {
		tls    bool
		scheme string
	}
	got := make(chan seen, 1)
	_, nc, _ := start(t, consumer.Config{Name: "scheme"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got <- seen{r.TLS != nil, r.URL.Scheme}
	}))
	for scheme, want := range map[string]bool{"https": true, "": false, "http": false} {
		h := nats.Header{consumer.HeaderPath: {"/"}}
		if scheme != "" {
			h.Set(consumer.HeaderScheme, scheme)
		}
		if _, err := nc.RequestMsg(&nats.Msg{Subject: "scheme", Header: h}, 10*time.Second); err != nil {
			t.Fatal(err)
		}
		if s := <-got; s.tls != want || s.scheme != "" {
			t.Errorf("Narun-Scheme %q: r.TLS set %v, r.URL.Scheme %q; want %v and \"\"", scheme, s.tls, s.scheme, want)
		}
	}
}

// stats is the service's endpoint stats as `nats micro stats` reads them,
// once they count requests: a request is counted after its reply went.
func stats(t *testing.T, nc *nats.Conn, name string, requests int) micro.EndpointStats {
	t.Helper()
	var st micro.Stats
	waitFor(t, fmt.Sprintf("%d requests in the stats", requests), func() bool {
		m, err := nc.Request("$SRV.STATS."+name, nil, 10*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(m.Data, &st); err != nil || len(st.Endpoints) != 1 {
			t.Fatalf("stats %s: %v", m.Data, err)
		}
		return st.Endpoints[0].NumRequests >= requests
	})
	return *st.Endpoints[0]
}

// A request whose time ran out while it waited for a free worker never
// reaches the handler: the gateway has answered its client already. It
// counts as an error.
func TestExpiredQueuedRequestIsDropped(t *testing.T) {
	var handled atomic.Int32
	busy, release := make(chan struct{}), make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "busy", MaxConcurrent: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if handled.Add(1) == 1 {
			close(busy)
			<-release
		}
	}))
	// Registered after start's: runs first, so that a test that failed
	// early does not leave the handler blocked.
	released := sync.OnceFunc(func() { close(release) })
	t.Cleanup(released)
	inbox := nats.NewInbox()
	replies, err := nc.SubscribeSync(inbox + ".*")
	if err != nil {
		t.Fatal(err)
	}
	send := func(id, timeout string) {
		if err := nc.PublishMsg(&nats.Msg{Subject: "busy", Reply: inbox + "." + id, Header: nats.Header{consumer.HeaderTimeout: {timeout}}}); err != nil {
			t.Fatal(err)
		}
	}
	send("first", "60000")
	<-busy
	// No time left: the gateway sends 0 when it has given up already.
	send("expired", "0")
	send("last", "60000")
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	released()
	for _, want := range []string{"first", "last"} {
		m, err := replies.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("reply to %s: %v", want, err)
		}
		if !strings.HasSuffix(m.Subject, "."+want) {
			t.Errorf("reply to %s, want %s", m.Subject, want)
		}
	}
	if n := handled.Load(); n != 2 {
		t.Errorf("handler ran %d times, want 2 (not for the expired request)", n)
	}
	if st := stats(t, nc, "busy", 3); st.NumRequests != 3 || st.NumErrors != 1 || st.LastError != "timed out waiting for a worker" {
		t.Errorf("stats %+v, want 3 requests and the expired one as an error", st)
	}
}

// A request the gateway gave up on while the handler ran counts as an
// error, though the handler returned normally: its client got a 504.
func TestRequestEndedBeforeTheReplyIsAnError(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "late"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
		_, _ = w.Write([]byte("too late"))
	}))
	if _, err := nc.RequestMsg(&nats.Msg{Subject: "late", Header: nats.Header{consumer.HeaderTimeout: {"50"}}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	st := stats(t, nc, "late", 1)
	if st.NumRequests != 1 || st.NumErrors != 1 || st.LastError != "request ended before the reply: context deadline exceeded" {
		t.Errorf("stats %+v, want the request counted as an error", st)
	}
}

// Another service calls this one over NATS and waits a little longer
// than the Narun-Timeout it sent, as its own deadline rounds up the
// milliseconds. A handler that gives up at its deadline answers
// nothing; the caller must not take that for an empty 200.
func TestReplyPastTheDeadlineIsA504(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "gaveup"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	m, err := nc.RequestMsg(&nats.Msg{Subject: "gaveup", Header: nats.Header{consumer.HeaderTimeout: {"50"}}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "504" {
		t.Errorf("reply past the deadline: status %q, error code %q, body %q; want error code 504", m.Header.Get(consumer.HeaderStatus), code, m.Data)
	}
}

// A streaming handler written for net/http clears its write deadline
// and asks for full duplex through http.ResponseController; both hold
// here, while a deadline of its own is refused as not supported.
func TestResponseController(t *testing.T) {
	got := make(chan []error, 1)
	_, nc, _ := start(t, consumer.Config{Name: "rc"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		got <- []error{rc.SetWriteDeadline(time.Time{}), rc.SetReadDeadline(time.Time{}), rc.EnableFullDuplex(), rc.SetWriteDeadline(time.Now().Add(time.Second))}
	}))
	if _, err := request(nc, "rc", "/"); err != nil {
		t.Fatal(err)
	}
	errs := <-got
	if errs[0] != nil || errs[1] != nil || errs[2] != nil || !errors.Is(errs[3], http.ErrNotSupported) {
		t.Errorf("clear write, clear read, full duplex, set deadline: %v; want nil, nil, nil, not supported", errs)
	}
}

// A response whose head does not fit in a NATS message gets a 500 at
// once, not a 504 at the route's timeout; streamed or not.
func TestResponseHeadTooLarge(t *testing.T) {
	huge := strings.Repeat("x", 2<<20)
	reported := make(chan error, 10)
	_, nc, _ := start(t, consumer.Config{Name: "huge", ErrorHandler: func(err error) { reported <- err }}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Huge", huge)
		_, _ = w.Write([]byte("body"))
		if r.URL.Path == "/flushed" {
			w.(http.Flusher).Flush()
		}
	}))
	for _, path := range []string{"/", "/flushed"} {
		m, err := request(nc, "huge", path)
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if got := m.Header.Get(consumer.HeaderServiceErrorCode); got != "500" {
			t.Errorf("%s: error code %q, want 500", path, got)
		}
		select {
		case err := <-reported:
			if !strings.Contains(err.Error(), "maximum payload exceeded") {
				t.Errorf("%s: reported %v", path, err)
			}
		default:
			t.Errorf("%s: the failure was not reported to the ErrorHandler", path)
		}
	}
}

// registerDefaultRoute adds TestNilHandlerIsDefaultServeMux's route to
// http.DefaultServeMux, once per process: registering a pattern again
// panics, and -count runs the test again in the same process.
var registerDefaultRoute = sync.OnceFunc(func() {
	http.HandleFunc("/consumer-nil-handler", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "from the DefaultServeMux")
	})
})

// TestNilHandlerIsDefaultServeMux checks that Serve, like net/http's
// server, serves http.DefaultServeMux when given no handler.
func TestNilHandlerIsDefaultServeMux(t *testing.T) {
	registerDefaultRoute()
	_, nc, _ := start(t, consumer.Config{Name: "nilhandler"}, nil)
	m, err := request(nc, "nilhandler", "/consumer-nil-handler")
	if err != nil {
		t.Fatal(err)
	}
	if got := string(m.Data); got != "from the DefaultServeMux" || m.Header.Get(consumer.HeaderServiceErrorCode) != "" {
		t.Errorf("reply %q, error %q: want the DefaultServeMux's handler's body", got, m.Header.Get(consumer.HeaderServiceError))
	}
}

// TestLargeTrailers has a handler end its body with a trailer too large
// to travel with the body's last part, and one too large for any message:
// the first reaches the gateway in an end frame of its own, the second
// ends the response with an error, both at once rather than leave the
// gateway waiting for an end until the route's timeout.
func TestLargeTrailers(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "trailers"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		size := 200 << 10
		if r.URL.Path == "/huge" {
			size = 2 << 20
		}
		w.Header().Set("Trailer", "X-Big")
		// Streaming from the start: the body's last part goes in the end
		// frame, not in the head.
		w.(http.Flusher).Flush()
		_, _ = w.Write(bytes.Repeat([]byte("b"), 900<<10))
		w.Header().Set("X-Big", strings.Repeat("t", size))
	}))
	for _, tc := range []struct {
		path    string
		code    string // of the end frame
		trailer int
	}{
		{"/near", "", 200 << 10},
		{"/huge", "500", 0},
	} {
		inbox := nc.NewInbox()
		sub, err := nc.SubscribeSync(inbox)
		if err != nil {
			t.Fatal(err)
		}
		err = nc.PublishMsg(&nats.Msg{Subject: "trailers", Reply: inbox, Header: nats.Header{
			consumer.HeaderPath: {tc.path}, consumer.HeaderTimeout: {"60000"}}})
		if err != nil {
			t.Fatal(err)
		}
		body := 0
		for {
			m, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("%s: waiting for the end of the response: %v", tc.path, err)
			}
			body += len(m.Data)
			if m.Reply != "" {
				_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}})
			}
			if m.Header.Get(consumer.HeaderFrame) != consumer.FrameEnd {
				continue
			}
			if got := m.Header.Get(consumer.HeaderServiceErrorCode); got != tc.code {
				t.Errorf("%s: end frame error code %q, want %q", tc.path, got, tc.code)
			}
			if got := len(m.Header.Get("X-Big")); got != tc.trailer {
				t.Errorf("%s: trailer of %d bytes, want %d", tc.path, got, tc.trailer)
			}
			if tc.code == "" && body != 900<<10 {
				t.Errorf("%s: body of %d bytes, want %d", tc.path, body, 900<<10)
			}
			break
		}
		_ = sub.Unsubscribe()
	}
}

// TestLargeHeadWithBody has a handler answer with a head and a body that
// each fit in a message, but not together: the response goes out whole,
// streamed, rather than as a 500 for a reply too large.
func TestLargeHeadWithBody(t *testing.T) {
	const bodySize, headerSize = 900 << 10, 200 << 10
	_, nc, _ := start(t, consumer.Config{Name: "bighead"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("h", headerSize))
		_, _ = w.Write(bytes.Repeat([]byte("b"), bodySize))
	}))
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	err = nc.PublishMsg(&nats.Msg{Subject: "bighead", Reply: inbox, Header: nats.Header{consumer.HeaderTimeout: {"60000"}}})
	if err != nil {
		t.Fatal(err)
	}
	body, header := 0, 0
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("waiting for the end of the response: %v", err)
		}
		if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
			t.Fatalf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
		}
		body += len(m.Data)
		if v := m.Header.Get("X-Big"); v != "" {
			header = len(v)
		}
		if m.Reply != "" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}})
		}
		f := m.Header.Get(consumer.HeaderFrame)
		if f == consumer.FrameEnd || (f == "" && m.Header.Get(consumer.HeaderBody) != consumer.BodyStream) {
			break
		}
	}
	if body != bodySize || header != headerSize {
		t.Errorf("body of %d bytes and header of %d, want %d and %d", body, header, bodySize, headerSize)
	}
}

// TestFlushSendsEverythingWritten has a handler write a body as large as
// a message holds, under a header that leaves the head room for only part
// of it, then flush and wait: all of the body reaches the gateway, as
// http.Flusher promises, not just what fitted in the head.
func TestFlushSendsEverythingWritten(t *testing.T) {
	const bodySize, headerSize = 900 << 10, 200 << 10
	release := make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "flushall"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Big", strings.Repeat("h", headerSize))
		_, _ = w.Write(bytes.Repeat([]byte("b"), bodySize))
		w.(http.Flusher).Flush()
		<-release
	}))
	defer close(release)
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	err = nc.PublishMsg(&nats.Msg{Subject: "flushall", Reply: inbox, Header: nats.Header{consumer.HeaderTimeout: {"60000"}}})
	if err != nil {
		t.Fatal(err)
	}
	body := 0
	for body < bodySize {
		m, err := sub.NextMsg(2 * time.Second)
		if err != nil {
			t.Fatalf("after Flush, %d of the %d bytes written reached the gateway: %v", body, bodySize, err)
		}
		if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
			t.Fatalf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
		}
		body += len(m.Data)
		if m.Reply != "" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}})
		}
	}
	if body != bodySize {
		t.Errorf("%d bytes of body reached the gateway, want %d", body, bodySize)
	}
}

// TestBodyCloseEndsPull has a handler read its body in a goroutine, answer
// without waiting for the rest, close the body and wait for the reader, as
// grpc-go's ServeHTTP does: the close ends the pull the gateway has not
// answered (a client that sends nothing more until it has the response),
// as net/http's server unblocks a read, so the response goes out.
func TestBodyCloseEndsPull(t *testing.T) {
	readErr, pulled := make(chan error, 1), make(chan struct{})
	_, nc, _ := start(t, consumer.Config{Name: "closebody"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, err := io.Copy(io.Discard, r.Body)
			readErr <- err
		}()
		// Closed while a pull waits, not before the reader started.
		<-pulled
		_, _ = io.WriteString(w, "early answer")
		_ = r.Body.Close()
		<-done
	}))
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	err = nc.PublishMsg(&nats.Msg{Subject: "closebody", Reply: inbox, Data: []byte("first"), Header: nats.Header{
		consumer.HeaderMethod: {"POST"}, consumer.HeaderBody: {consumer.BodyStream}, consumer.HeaderTimeout: {"600000"}}})
	if err != nil {
		t.Fatal(err)
	}
	// The pulls stay unanswered: the reply must come without them.
	var pull *nats.Msg
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			if pull != nil {
				// Lets the handler, and Serve, end.
				_ = pull.RespondMsg(&nats.Msg{Header: nats.Header{consumer.HeaderFrame: {consumer.FrameCancel}}})
			}
			t.Fatalf("waiting for the response: %v", err)
		}
		if m.Header.Get(consumer.HeaderFrame) == consumer.FramePull {
			if pull == nil {
				close(pulled)
			}
			pull = m
			continue
		}
		if string(m.Data) != "early answer" {
			t.Errorf("response %q %v, want %q", m.Data, m.Header, "early answer")
		}
		break
	}
	if err := <-readErr; err == nil {
		t.Error("the body read in the goroutine ended without an error")
	}
}

// TestBodyCloseWhileRead closes a body that fits in one message while
// another goroutine reads it, which net/http's request body allows; run
// with -race.
func TestBodyCloseWhileRead(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "closeread"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(io.Discard, r.Body)
		}()
		_ = r.Body.Close()
		<-done
	}))
	m, err := nc.RequestMsg(&nats.Msg{Subject: "closeread", Data: []byte("small body"), Header: nats.Header{consumer.HeaderMethod: {"POST"}}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
		t.Errorf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
	}
}

// TestConnClosedEndsHandlers closes the service's connection while a
// handler waits for its request to end, as a stream does: no reply can go
// out any more, so the handler's context ends, as net/http's server ends
// its handlers' when it closes, and Serve returns, rather than both
// waiting for the request's timeout.
func TestConnClosedEndsHandlers(t *testing.T) {
	srv := natstest.Start(t)
	svc, err := srv.Connect()
	if err != nil {
		t.Fatal(err)
	}
	entered := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- consumer.Serve(context.Background(), svc, consumer.Config{Name: "gonemid"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			close(entered)
			<-r.Context().Done()
		}))
	}()
	nc := natstest.Connect(t, srv)
	waitServing(t, srv, "gonemid")
	err = nc.PublishMsg(&nats.Msg{Subject: "gonemid", Reply: nc.NewInbox(), Header: nats.Header{consumer.HeaderTimeout: {"600000"}}})
	if err != nil {
		t.Fatal(err)
	}
	<-entered
	svc.Close()
	select {
	case err := <-done:
		if !errors.Is(err, consumer.ErrConnClosed) {
			t.Errorf("Serve = %v, want ErrConnClosed", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve still waits for the handler of a closed connection")
	}
}

// TestGoexitInHandler has a handler end its goroutine with
// runtime.Goexit, as t.FailNow in a handler does: the request fails at
// once, as net/http's server closes the connection, and the worker's
// place in the pool is not lost, so the next request is served.
func TestGoexitInHandler(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "goexit", MaxConcurrent: 1}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/exit" {
			runtime.Goexit()
		}
		_, _ = io.WriteString(w, "served")
	}))
	m, err := request(nc, "goexit", "/exit")
	if err != nil {
		t.Fatalf("/exit: %v", err)
	}
	if got := m.Header.Get(consumer.HeaderServiceErrorCode); got != "500" {
		t.Errorf("/exit: error code %q, want 500", got)
	}
	m, err = request(nc, "goexit", "/")
	if err != nil {
		t.Fatalf("/ after /exit: %v", err)
	}
	if string(m.Data) != "served" {
		t.Errorf("/ after /exit: %q, want %q", m.Data, "served")
	}
	if st := stats(t, nc, "goexit", 2); st.NumErrors != 1 {
		t.Errorf("stats %+v, want 1 error of 2 requests", st)
	}
}

// TestHeadSniffsLikeNetHTTP compares the Content-Type a handler that sets
// none gets with net/http's server, which guesses it from the first 512
// bytes written before the head goes out, however many writes they took.
// For GET the consumer sends the body and the gateway's net/http writer
// guesses from what it writes first: the payload of the reply's first
// message.
func TestHeadSniffsLikeNetHTTP(t *testing.T) {
	html := "<!DOCTYPE html><html><body>x</body></html>"
	png := "\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x00\x00\x01\x00\x00\x00\x01\x08\x06\x00\x00\x00"
	cases := []struct {
		name     string
		encoding string
		parts    []string
		// flushAfter flushes after that many parts, 0 for never.
		flushAfter int
	}{
		{name: "newline then html", parts: []string{"\n", html}},
		{name: "png magic split", parts: []string{png[:3], png[3:]}},
		{name: "single short write", parts: []string{html}},
		{name: "html within 512 bytes", parts: []string{strings.Repeat(" ", 300), html}},
		{name: "html past 512 bytes", parts: []string{strings.Repeat(" ", 300), strings.Repeat(" ", 300), html}},
		{name: "flushed before the html", parts: []string{"\n", html}, flushAfter: 1},
		{name: "encoded", encoding: "br", parts: []string{"\n", html}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tc.encoding != "" {
					w.Header().Set("Content-Encoding", tc.encoding)
				}
				for i, p := range tc.parts {
					_, _ = w.Write([]byte(p))
					if i+1 == tc.flushAfter {
						w.(http.Flusher).Flush()
					}
				}
			})
			hs := httptest.NewServer(h)
			defer hs.Close()
			_, nc, _ := start(t, consumer.Config{Name: "sniff"}, h)
			for _, method := range []string{http.MethodHead, http.MethodGet} {
				req, err := http.NewRequest(method, hs.URL, nil)
				if err != nil {
					t.Fatal(err)
				}
				resp, err := hs.Client().Do(req)
				if err != nil {
					t.Fatalf("%s from net/http: %v", method, err)
				}
				_ = resp.Body.Close()
				want := resp.Header.Get("Content-Type")
				reply, err := nc.RequestMsg(&nats.Msg{Subject: "sniff", Header: nats.Header{consumer.HeaderMethod: {method}, consumer.HeaderPath: {"/"}}}, 10*time.Second)
				if err != nil {
					t.Fatalf("%s through the consumer: %v", method, err)
				}
				got := reply.Header.Get("Content-Type")
				if _, typed := reply.Header["Content-Type"]; !typed && len(reply.Data) > 0 && reply.Header.Get("Content-Encoding") == "" {
					// What the gateway's net/http writer guesses.
					got = http.DetectContentType(reply.Data)
				}
				if got != want {
					t.Errorf("%s: Content-Type %q through the consumer, net/http sends %q", method, got, want)
				}
			}
		})
	}
}

// Response headers too large for one NATS message cannot be sent: the
// error the client gets says so, with both sizes, whether the head goes
// with the body or before a streamed one.
func TestResponseHeadersOverMaxPayloadSaySo(t *testing.T) {
	for _, flush := range []bool{false, true} {
		t.Run(fmt.Sprintf("flushed %v", flush), func(t *testing.T) {
			_, nc, _ := start(t, consumer.Config{Name: "huge"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-Huge", strings.Repeat("h", 1100<<10))
				_, _ = io.WriteString(w, "ok")
				if flush {
					w.(http.Flusher).Flush()
				}
			}))
			reply, err := request(nc, "huge", "/")
			if err != nil {
				t.Fatal(err)
			}
			code, text := reply.Header.Get(consumer.HeaderServiceErrorCode), reply.Header.Get(consumer.HeaderServiceError)
			if code != "500" || !strings.Contains(text, "max_payload") || !strings.Contains(text, strconv.Itoa(int(nc.MaxPayload()))) {
				t.Errorf("reply error %s %q, want 500 naming the headers' size against max_payload %d", code, text, nc.MaxPayload())
			}
		})
	}
}

// With the TLS files the runner names, an app reaches a server that
// requires TLS and verifies clients; NARUN_NATS_TLS_NAME is the name the
// certificate is checked for when the URL's host is another (the
// runner's NATS bridge).
func TestListenAndServeOverTLS(t *testing.T) {
	ca := natstest.NewCA(t)
	serverCert, serverKey := ca.Issue(t, "server", "nats.edge.test")
	appCert, appKey := ca.Issue(t, "app")
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0",
		TLS: embednats.TLS{Cert: serverCert, Key: serverKey, CA: ca.File, Verify: true}})
	nc := natstest.Connect(t, srv)
	full := map[string]string{"NARUN_NATS_CA": ca.File, "NARUN_NATS_CERT": appCert, "NARUN_NATS_KEY": appKey, "NARUN_NATS_TLS_NAME": "nats.edge.test"}
	without := func(names ...string) map[string]string {
		env := maps.Clone(full)
		for _, name := range names {
			delete(env, name)
		}
		return env
	}
	withCert := func(cert, key string) map[string]string {
		env := maps.Clone(full)
		env["NARUN_NATS_CERT"], env["NARUN_NATS_KEY"] = cert, key
		return env
	}
	for _, tc := range []struct {
		name string
		env  map[string]string
		// want is what the ErrorHandler hears; "" means the service
		// comes up.
		want string
	}{
		{"every file", full, ""},
		// Told by an alert or, with TLS 1.3, by a write that finds the
		// connection closed: the hint is in either.
		{"no client certificate", without("NARUN_NATS_CERT", "NARUN_NATS_KEY"), "one that verifies clients wants a certificate its CA signed, NARUN_NATS_CERT and NARUN_NATS_KEY"},
		{"no name", without("NARUN_NATS_TLS_NAME"), "cannot validate certificate for 127.0.0.1"},
		{"no CA", without("NARUN_NATS_CA"), "certificate signed by unknown authority"},
		// One without the extension is good for any use.
		{"no extended key usage", withCert(ca.IssueFor(t, "anyuse", nil)), ""},
		// The server's alert does not say why it refused one for
		// servers only: the hint does.
		{"a certificate not for clients", withCert(ca.IssueFor(t, "serveronly", []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth})), "its extended key usage lacks clientAuth"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("NARUN_NATS_URL", srv.ClientURL())
			for _, name := range []string{"NARUN_NATS_CA", "NARUN_NATS_CERT", "NARUN_NATS_KEY", "NARUN_NATS_TLS_NAME"} {
				t.Setenv(name, tc.env[name])
			}
			ctx, cancel := context.WithCancel(context.Background())
			reported := make(chan error, 16)
			done := make(chan error, 1)
			service := "tls" + strconv.Itoa(len(tc.name))
			go func() {
				done <- consumer.ListenAndServe(ctx, consumer.Config{Name: service, ErrorHandler: func(err error) {
					select {
					case reported <- err:
					default:
					}
				}}, http.NotFoundHandler())
			}()
			defer func() {
				cancel()
				if err := <-done; err != nil {
					t.Errorf("ListenAndServe = %v after the stop", err)
				}
			}()
			deadline := time.After(10 * time.Second)
			for {
				if tc.want == "" {
					if _, err := nc.Request("$SRV.PING."+service, nil, 100*time.Millisecond); err == nil {
						return
					}
				}
				select {
				case err := <-reported:
					t.Log(err)
					if tc.want != "" && strings.Contains(err.Error(), tc.want) {
						return
					}
					if tc.want == "" {
						t.Fatalf("ErrorHandler: %v", err)
					}
				case <-deadline:
					t.Fatalf("neither the service nor an error with %q came up", tc.want)
				case <-time.After(50 * time.Millisecond):
				}
			}
		})
	}

	t.Run("a CA file without a certificate", func(t *testing.T) {
		t.Setenv("NARUN_NATS_URL", srv.ClientURL())
		t.Setenv("NARUN_NATS_CA", appKey)
		err := consumer.ListenAndServe(context.Background(), consumer.Config{Name: "badca"}, http.NotFoundHandler())
		if err == nil || !strings.Contains(err.Error(), "NARUN_NATS_CA "+appKey+": no PEM certificate") {
			t.Fatalf("ListenAndServe = %v, want an error naming NARUN_NATS_CA", err)
		}
	})
}

// TestChunkFollowsTheServersMaxPayload has the service fail over from a
// server with a large max_payload to one with the default 1 MiB, as an
// app does whose NARUN_NATS_URL lists servers configured apart (or whose
// server restarts with a smaller max_payload): a response larger than a
// message still reaches the requester whole, in chunks the new server
// takes, rather than stop after its head.
func TestChunkFollowsTheServersMaxPayload(t *testing.T) {
	const bodySize = 3 << 20
	large, small, svc, _ := failingOver(t)
	serve(t, svc, consumer.Config{Name: "failover"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write(bytes.Repeat([]byte("b"), bodySize))
	}))
	waitServing(t, large, "failover")
	// A first response on the large server, as a service serves before
	// its server goes.
	nc := natstest.Connect(t, large)
	if got := streamedBody(t, nc, "failover"); got != bodySize {
		t.Fatalf("on the first server: %d bytes of body, want %d", got, bodySize)
	}
	large.Shutdown()
	waitServing(t, small, "failover")
	if got := streamedBody(t, natstest.Connect(t, small), "failover"); got != bodySize {
		t.Errorf("after failing over to a server with a smaller max_payload: %d bytes of body, want %d", got, bodySize)
	}
}

// streamedBody requests subject as the gateway does, acks the data frames
// of the response and returns the length of its body.
func streamedBody(t *testing.T, nc *nats.Conn, subject string) int {
	t.Helper()
	body := 0
	for _, m := range responseMsgs(t, nc, subject, nats.Header{consumer.HeaderTimeout: {"60000"}}) {
		if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
			t.Fatalf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
		}
		body += len(m.Data)
	}
	return body
}

// TestFramesFollowAShrunkMaxPayload fails the service over, in the middle
// of a response, from a server with an 8 MiB max_payload to one with the
// default 1 MiB: what the handler wrote before and writes after goes out
// in frames the new server takes, and the response ends whole.
func TestFramesFollowAShrunkMaxPayload(t *testing.T) {
	const before, after = 3 << 20, 9 << 20
	large, small, svc, reconnected := failingOver(t)
	written, release := make(chan struct{}), make(chan struct{})
	serve(t, svc, consumer.Config{Name: "shrunk"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.(http.Flusher).Flush()
		// Less than a chunk of the first server: it waits.
		_, _ = w.Write(bytes.Repeat([]byte("b"), before))
		close(written)
		select {
		case <-release:
		case <-r.Context().Done():
			return
		}
		_, _ = w.Write(bytes.Repeat([]byte("c"), after))
	}))
	waitServing(t, large, "shrunk")

	inbox := nats.NewInbox()
	first := natstest.Connect(t, large)
	head, err := first.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	second := natstest.Connect(t, small)
	frames, err := second.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	if err := second.Flush(); err != nil {
		t.Fatal(err)
	}
	// A window the 3 MiB fit in: the first server's chunk is what holds them back.
	err = first.PublishMsg(&nats.Msg{Subject: "shrunk", Reply: inbox, Header: nats.Header{consumer.HeaderTimeout: {"60000"}, consumer.HeaderWindow: {strconv.Itoa(64 << 20)}}})
	if err != nil {
		t.Fatal(err)
	}
	if m, err := head.NextMsg(10 * time.Second); err != nil || m.Header.Get(consumer.HeaderBody) != consumer.BodyStream {
		t.Fatalf("streamed head: %v, %v", m, err)
	}
	<-written
	large.Shutdown()
	<-reconnected
	close(release)
	got := 0
	for {
		m, err := frames.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("after %d bytes of the body, waiting for the next frame: %v", got, err)
		}
		got += len(m.Data)
		if f := m.Header.Get(consumer.HeaderFrame); f == consumer.FrameEnd {
			if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
				t.Fatalf("end frame with error %s %q", code, m.Header.Get(consumer.HeaderServiceError))
			}
			break
		}
		if err := second.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}}); err != nil {
			t.Fatal(err)
		}
	}
	if got != before+after {
		t.Errorf("the body took %d bytes, want %d", got, before+after)
	}
}

// TestNATSHeadersOfTheHandlerAreDropped has a handler set headers named
// as NATS's and the protocol's, in the head of a whole reply and as
// trailers of a streamed one: none goes out, as the package says, where
// the gateway would take a Nats-Service-Error-Code for the service's own
// error and turn a 200 into a 409, or abort a response already sent.
func TestNATSHeadersOfTheHandlerAreDropped(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "natshdr"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/stream" {
			w.Header().Set("Trailer", "Nats-Service-Error-Code, Narun-Status, X-Kept")
			w.(http.Flusher).Flush()
			_, _ = io.WriteString(w, "ok")
			w.Header().Set("Nats-Service-Error-Code", "409")
			w.Header().Set("Narun-Status", "404")
			w.Header().Set("X-Kept", "yes")
			w.Header().Set(http.TrailerPrefix+"Nats-Service-Error", "from a trailer")
			return
		}
		w.Header().Set("Nats-Service-Error-Code", "409")
		w.Header().Set("Nats-Service-Error", "from the head")
		w.Header().Set("X-Kept", "yes")
		_, _ = io.WriteString(w, "ok")
	}))
	for _, path := range []string{"/whole", "/stream"} {
		kept := false
		for _, m := range responseMsgs(t, nc, "natshdr", nats.Header{consumer.HeaderPath: {path}}) {
			for k, v := range m.Header {
				if strings.HasPrefix(k, "Nats-") || (k == consumer.HeaderStatus && m.Header.Get(consumer.HeaderFrame) != "") {
					t.Errorf("%s: %s: %q went out", path, k, v)
				}
			}
			kept = kept || m.Header.Get("X-Kept") == "yes"
		}
		if !kept {
			t.Errorf("%s: X-Kept did not go out", path)
		}
	}
}

// responseMsgs sends a request with head h to subject as the gateway does
// and returns the messages of its response, head to end, each data frame
// acked.
func responseMsgs(t *testing.T, nc *nats.Conn, subject string, h nats.Header) []*nats.Msg {
	t.Helper()
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Unsubscribe()
	if err := nc.PublishMsg(&nats.Msg{Subject: subject, Reply: inbox, Header: h}); err != nil {
		t.Fatal(err)
	}
	var msgs []*nats.Msg
	for {
		m, err := sub.NextMsg(10 * time.Second)
		if err != nil {
			t.Fatalf("%s %s: waiting for the end of the response, %d message(s) of it so far: %v", subject, h.Get(consumer.HeaderPath), len(msgs), err)
		}
		if m.Reply != "" {
			_ = nc.PublishMsg(&nats.Msg{Subject: m.Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}})
		}
		msgs = append(msgs, m)
		f := m.Header.Get(consumer.HeaderFrame)
		if f == consumer.FrameEnd || (f == "" && m.Header.Get(consumer.HeaderBody) != consumer.BodyStream) {
			return msgs
		}
	}
}

// An asynchronous error of the connection (here the server refusing a
// reply the login may not publish) reaches the ErrorHandler: nats.go's
// default handler would print it on stderr, and the library does not log.
func TestListenAndServeReportsAsyncErrors(t *testing.T) {
	srv := natstest.StartConfig(t, embednats.Config{Listen: "127.0.0.1:0", Users: []embednats.User{
		{User: "app", Password: "pw", Permissions: &embednats.Permissions{DenyPublish: []string{"denied.>"}}},
		{User: "client", Password: "pw"},
	}})
	t.Setenv("NARUN_NATS_URL", strings.Replace(srv.ClientURL(), "nats://", "nats://app:pw@", 1))
	reported := make(chan error, 10)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- consumer.ListenAndServe(ctx, consumer.Config{Name: "limited", ErrorHandler: func(err error) { reported <- err }},
			http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("hi")) }))
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	client := natstest.Connect(t, srv, nats.UserInfo("client", "pw"))
	waitServing(t, srv, "limited")
	if err := client.PublishMsg(&nats.Msg{Subject: "limited", Reply: "denied.1", Header: nats.Header{consumer.HeaderMethod: {"GET"}, consumer.HeaderPath: {"/"}}}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-reported:
		if !strings.Contains(strings.ToLower(err.Error()), "permissions violation") {
			t.Errorf("reported %v, want the server's permissions violation", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the server's permissions violation was not reported to the ErrorHandler")
	}
}

// TestResponseKeepsToTheWindow asks for responses as a gateway that gives
// a small window does, and acks each data frame only once three more have
// come: no message of the response may carry more body than the window,
// and the data frames not yet acked never more than it together.
func TestResponseKeepsToTheWindow(t *testing.T) {
	const bodySize = 3 << 20
	cases := []struct {
		name   string
		window int
		write  func(w http.ResponseWriter)
	}{
		{"one large write", 64 << 10, func(w http.ResponseWriter) {
			_, _ = w.Write(bytes.Repeat([]byte("a"), bodySize))
		}},
		{"flushed small writes", 100 << 10, func(w http.ResponseWriter) {
			part := bytes.Repeat([]byte("b"), 40<<10)
			for n := 0; n < bodySize; n += len(part) {
				_, _ = w.Write(part[:min(len(part), bodySize-n)])
				w.(http.Flusher).Flush()
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, nc, _ := start(t, consumer.Config{Name: "windowed"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				tc.write(w)
			}))
			inbox := nc.NewInbox()
			sub, err := nc.SubscribeSync(inbox)
			if err != nil {
				t.Fatal(err)
			}
			err = nc.PublishMsg(&nats.Msg{Subject: "windowed", Reply: inbox, Header: nats.Header{
				consumer.HeaderTimeout: {"60000"},
				consumer.HeaderWindow:  {strconv.Itoa(tc.window)},
			}})
			if err != nil {
				t.Fatal(err)
			}
			var unacked []*nats.Msg
			inFlight, body := 0, 0
			for {
				m, err := sub.NextMsg(10 * time.Second)
				if err != nil {
					t.Fatalf("waiting for the response, %d bytes of body so far, %d not acked: %v", body, inFlight, err)
				}
				if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
					t.Fatalf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
				}
				if len(m.Data) > tc.window {
					t.Fatalf("a message carries %d bytes of body, more than the window of %d", len(m.Data), tc.window)
				}
				body += len(m.Data)
				frame := m.Header.Get(consumer.HeaderFrame)
				if frame == consumer.FrameEnd || (frame == "" && m.Header.Get(consumer.HeaderBody) != consumer.BodyStream) {
					break
				}
				if frame != consumer.FrameData || m.Reply == "" {
					continue
				}
				unacked = append(unacked, m)
				inFlight += len(m.Data)
				if inFlight > tc.window {
					t.Fatalf("%d bytes in data frames not acked, more than the window of %d", inFlight, tc.window)
				}
				if len(unacked) > 3 {
					inFlight -= len(unacked[0].Data)
					_ = nc.PublishMsg(&nats.Msg{Subject: unacked[0].Reply, Header: nats.Header{consumer.HeaderFrame: {consumer.FrameAck}}})
					unacked = unacked[1:]
				}
			}
			if body != bodySize {
				t.Errorf("%d bytes of body, want %d", body, bodySize)
			}
		})
	}
}

// TestWithPrefixStreams serves the streaming handler of ExampleListenAndServe,
// which flushes with w.(http.Flusher), behind the wrapper of
// Example_stripPrefix: the two examples are meant to be combined.
func TestWithPrefixStreams(t *testing.T) {
	_, nc, _ := start(t, consumer.Config{Name: "prefixed"}, withPrefix(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fmt.Fprint(w, "data: 1\n\n")
		w.(http.Flusher).Flush()
	})))
	m, err := nc.RequestMsg(&nats.Msg{Subject: "prefixed", Header: nats.Header{"X-Forwarded-Prefix": {"/api"}}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if code := m.Header.Get(consumer.HeaderServiceErrorCode); code != "" {
		t.Fatalf("error %s: %s", code, m.Header.Get(consumer.HeaderServiceError))
	}
	if got := m.Header.Get(consumer.HeaderBody); got != consumer.BodyStream {
		t.Errorf("head's %s is %q after a Flush, want %q", consumer.HeaderBody, got, consumer.BodyStream)
	}
}
