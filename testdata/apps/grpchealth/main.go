// Command grpchealth is the gRPC test fixture: grpc-go's health service
// served through the narun gateway with consumer.ListenAndServe, and, with
// --call ADDR, a grpc-go client that calls it and prints what it got.
//
// It is a module of its own so that narun itself does not depend on gRPC:
// a gRPC service imports narun's consumer package as any other would.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/narun/narun/consumer"
)

func main() {
	call := flag.String("call", "", "call the service through the gateway at host:port (h2c) and print the results as JSON lines")
	flag.Parse()
	if *call != "" {
		if err := callAll(*call); err != nil {
			log.Fatal(err)
		}
		return
	}
	s := grpc.NewServer()
	h := health.NewServer()
	h.SetServingStatus("narun", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	// *grpc.Server is an http.Handler for HTTP/2 requests, which is what
	// the gateway forwards from a gRPC client.
	cfg := consumer.Config{Name: "grpchealth", Version: "1.0.0", Description: "gRPC health service"}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := consumer.ListenAndServe(ctx, cfg, s); err != nil {
		log.Fatal(err)
	}
}

// result is one call's outcome, printed as a JSON line.
type result struct {
	Call    string `json:"call"`
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Status  string `json:"status,omitempty"`
}

func callAll(addr string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dial %s: %w", addr, err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	client := healthpb.NewHealthClient(conn)
	out := json.NewEncoder(os.Stdout)
	emit := func(call string, resp *healthpb.HealthCheckResponse, err error) {
		r := result{Call: call, Code: status.Code(err).String()}
		if err != nil {
			r.Message = status.Convert(err).Message()
		} else {
			r.Status = resp.GetStatus().String()
		}
		_ = out.Encode(r)
	}
	for _, svc := range []string{"narun", "unknown"} {
		resp, err := client.Check(ctx, &healthpb.HealthCheckRequest{Service: svc})
		emit("check "+svc, resp, err)
	}
	// A server stream: the first update arrives while the call stays open.
	stream, err := client.Watch(ctx, &healthpb.HealthCheckRequest{Service: "narun"})
	var first *healthpb.HealthCheckResponse
	if err == nil {
		first, err = stream.Recv()
	}
	emit("watch narun", first, err)
	// A method no route leads to.
	err = conn.Invoke(ctx, "/narun.Missing/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	emit("unrouted", nil, err)
	return nil
}
