// Command hello is the fixture of narun's tests and benchmark: one handler
// served either as the NATS Micro service "hello" behind the gateway
// (default) or as a plain HTTP server (--http ADDR), so the two paths can be
// compared request for request.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/narun/narun/consumer"
)

func main() {
	httpAddr := flag.String("http", "", "serve plain HTTP on this address instead of NATS")
	name := flag.String("service", "hello", "NATS Micro service name (and subject)")
	flag.Usage = usage
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if *httpAddr != "" {
		err = serveHTTP(ctx, *httpAddr)
	} else {
		err = consumer.ListenAndServe(ctx, consumer.Config{
			Name:        *name,
			Version:     "1.0.0",
			Description: "narun test fixture: greets and echoes",
		}, Handler())
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "hello:", err)
		os.Exit(1)
	}
}

// usage is the -help text: how the consumer finds its NATS server, which
// no flag says.
func usage() {
	w := flag.CommandLine.Output()
	fmt.Fprintf(w, `usage: %s [flags]

Serves a greeting and echo handler as the NATS Micro service -service
(default), or as plain HTTP with -http. As a NATS consumer it connects to
NARUN_NATS_URL (comma-separated URLs; default nats://127.0.0.1:4222), with
the credentials file NARUN_NATS_CREDS (JWT + seed) or the nkey seed file
NARUN_NATS_NKEY when set, and over TLS with NARUN_NATS_CA (the servers'
CA), NARUN_NATS_CERT and NARUN_NATS_KEY (its own certificate) when set,
checking the servers' certificate for the name NARUN_NATS_TLS_NAME when set
(behind a sandbox's NATS bridge, whose address is not the server's). The
narun runner sets these for the apps it runs.

flags:
`, filepath.Base(os.Args[0]))
	flag.PrintDefaults()
}

func serveHTTP(ctx context.Context, addr string) error {
	srv := &http.Server{Addr: addr, Handler: Handler(), ReadHeaderTimeout: 10 * time.Second}
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := srv.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	}
}

// Handler greets on POST /hello/ with {"name":"X"} and otherwise echoes
// what it received under /hello/, as the shared contract has it.
func Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /hello/{$}", func(w http.ResponseWriter, r *http.Request) {
		// A greeting's body is small; a longer one is echoed whole.
		head, err := io.ReadAll(io.LimitReader(r.Body, maxGreeting+1))
		if err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
		var in struct {
			Name string `json:"name"`
		}
		if len(head) <= maxGreeting && json.Unmarshal(head, &in) == nil && in.Name != "" {
			writeJSON(w, http.StatusOK, map[string]string{"message": "Hello, " + in.Name + "!"})
			return
		}
		echo(w, r, int64(len(head)))
	})
	mux.HandleFunc("/hello/", func(w http.ResponseWriter, r *http.Request) { echo(w, r, 0) })
	return mux
}

// maxGreeting is the largest body read as a greeting.
const maxGreeting = 1 << 20

// echo answers what the request was, read counting the body's bytes from
// those already read.
func echo(w http.ResponseWriter, r *http.Request, read int64) {
	n, err := io.Copy(io.Discard, r.Body)
	if err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{
		"method": r.Method, "path": r.URL.Path, "query": r.URL.RawQuery, "body_length": read + n,
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
