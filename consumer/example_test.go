package consumer_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
	"github.com/narun/narun/embednats"
)

// A service deployed by narun reads its NATS address and credentials from
// the environment the runner sets, and stops cleanly on SIGTERM.
func ExampleListenAndServe() {
	// SIGTERM is what the runner (and systemd) stop a service with.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /hello/{name}", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello, %s!\n", r.PathValue("name"))
	})
	// A stream ends on the stop signal too: the stop waits for the
	// handlers, whose contexts it does not cancel, and the runner kills
	// one still running at stop_timeout, leaving its client waiting for
	// the route's timeout. Ended, the client's response ends cleanly.
	mux.HandleFunc("GET /hello/events", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: tick %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done(): // client gone, or the route's timeout
				return
			case <-ctx.Done(): // SIGTERM: let the client reconnect elsewhere
				return
			case <-time.After(time.Second):
			}
		}
	})
	cfg := consumer.Config{
		Name:    "hello",
		Version: "1.0.0",
		// Panics (with their stack) and a NATS server out of reach; without
		// a handler they go to the standard logger.
		ErrorHandler: func(err error) { slog.Error("consumer", "err", err) },
	}
	err := consumer.ListenAndServe(ctx, cfg, mux)
	if err != nil {
		log.Fatal(err)
	}
}

// Serve takes a connection made by the caller, for programs that already
// talk to NATS. Handlers may stream: every Flush reaches the client.
func ExampleServe() {
	nc, err := nats.Connect(nats.DefaultURL)
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	events := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := 0; ; i++ {
			fmt.Fprintf(w, "data: tick %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done(): // client gone, or the route's timeout
				return
			case <-time.After(time.Second):
			}
		}
	})
	cfg := consumer.Config{
		Name:          "clock",
		Version:       "0.1.0",
		Description:   "a tick a second",
		MaxConcurrent: 100,
	}
	if err := consumer.Serve(context.Background(), nc, cfg, events); err != nil {
		log.Fatal(err)
	}
}

// What the gateway sends is a plain NATS request: any NATS client can play
// the gateway (or the service) without this package.
func Example_protocol() {
	nc, stop := exampleService("echo", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		w.Header().Set("Content-Type", "text/plain")
		w.WriteHeader(http.StatusCreated)
		fmt.Fprintf(w, "%s %s?%s host=%s body=%s", r.Method, r.URL.Path, r.URL.RawQuery, r.Host, body)
	})
	defer stop()
	req := &nats.Msg{Subject: "echo", Data: []byte("hi"), Header: nats.Header{
		"Narun-Method": {"POST"},
		"Narun-Path":   {"/notes/1"},
		"Narun-Query":  {"draft=true"},
		"Narun-Host":   {"example.com"},
	}}
	// Until Serve has subscribed, nobody answers: the gateway says 503
	// with Retry-After then; here the request is sent again.
	reply, err := nc.RequestMsg(req, 5*time.Second)
	for errors.Is(err, nats.ErrNoResponders) {
		time.Sleep(10 * time.Millisecond)
		reply, err = nc.RequestMsg(req, 5*time.Second)
	}
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(reply.Header.Get("Narun-Status"), reply.Header.Get("Content-Type"))
	fmt.Println(string(reply.Data))
	// Output:
	// 201 text/plain
	// POST /notes/1?draft=true host=example.com body=hi
}

// A responder written without this package (docs/PROTOCOL.md §4) hears of
// the requests the gateway gave up on here, without a queue group; Serve
// subscribes to it by itself.
func ExampleCancelSubject() {
	fmt.Println(consumer.CancelSubject("hello"))
	// Output: _NARUN.cancel.hello
}

// A client of its own tells a gRPC call by its content type, to send it as
// HTTP/2 (Narun-Proto), as the gateway and Transport do.
func ExampleIsGRPC() {
	for _, ct := range []string{"application/grpc", "application/grpc+proto", "application/grpc-web", "application/json"} {
		fmt.Println(ct, consumer.IsGRPC(ct))
	}
	// Output:
	// application/grpc true
	// application/grpc+proto true
	// application/grpc-web false
	// application/json false
}

// A tool that checks routes before it writes them refuses the subjects
// that Serve refuses, as narun does.
func ExampleIsReservedSubject() {
	for _, s := range []string{"hello", "$JS.API.STREAM.LIST", "_INBOX.x", "_NARUN.cancel.hello"} {
		fmt.Println(s, consumer.IsReservedSubject(s))
	}
	// Output:
	// hello false
	// $JS.API.STREAM.LIST true
	// _INBOX.x true
	// _NARUN.cancel.hello true
}

// One app calls another's service over NATS, as the gateway would: the
// URL's host is the service's subject. A sandboxed app reaches it with no
// network but its NATS connection.
func ExampleTransport() {
	nc, stop := exampleService("greeter", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello, %s! (request %s)", r.URL.Query().Get("name"), r.Header.Get("X-Request-Id"))
	})
	defer stop()
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}

	req, _ := http.NewRequest(http.MethodGet, "http://greeter/greet?name=Ada", nil)
	// A call made outside a served request names its own id; one made
	// with a served request's context carries that request's on
	// (ExampleConnect).
	req.Header.Set("X-Request-Id", "r-1")
	resp, err := client.Do(req)
	// Until Serve has subscribed, nobody answers.
	for errors.Is(err, consumer.ErrNoService) {
		time.Sleep(10 * time.Millisecond)
		resp, err = client.Do(req)
	}
	if err != nil {
		log.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.Status)
	fmt.Println(string(body))
	// Output:
	// 200 OK
	// Hello, Ada! (request r-1)
}

// An app that calls other services connects once, as the runner tells it
// to, and both serves and calls on that connection.
func ExampleConnect() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	nc, err := consumer.Connect(nats.Name("front"))
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}}
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// The caller's deadline and cancellation reach the called
		// service, and so do its request id and trace (X-Request-Id,
		// Traceparent), carried on from r's context.
		req, _ := http.NewRequestWithContext(r.Context(), http.MethodGet, "http://greeter/greet?name=Ada", nil)
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		io.Copy(w, resp.Body)
	})
	if err := consumer.Serve(ctx, nc, consumer.Config{Name: "front", Version: "1.0.0"}, front); err != nil {
		log.Fatal(err)
	}
}

// exampleService starts a NATS server of its own and serves h on it as the
// service name, for the examples that need one; it returns a client
// connection and what stops it all.
func exampleService(name string, h http.HandlerFunc) (*nats.Conn, func()) {
	dir, _ := os.MkdirTemp("", "example")
	srv, err := embednats.Start(embednats.Config{DataDir: dir})
	if err != nil {
		log.Fatal(err)
	}
	svcConn, _ := srv.Connect()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- consumer.Serve(ctx, svcConn, consumer.Config{Name: name}, h) }()
	nc, _ := srv.Connect()
	return nc, func() {
		cancel()
		<-done
		nc.Close()
		svcConn.Close()
		srv.Shutdown()
		os.RemoveAll(dir)
	}
}
