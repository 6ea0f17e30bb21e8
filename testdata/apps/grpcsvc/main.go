// Command grpcsvc is the gRPC test fixture. With no flags it serves gRPC's
// interop TestService and the health service through the narun gateway with
// consumer.ListenAndServe. With --interop ADDR it runs gRPC's interop cases
// (unary, client, server and bidirectional streams, metadata, status codes,
// cancellation, deadlines) against the gateway at ADDR; with --status ADDR it
// makes a health check and a call no route leads to, printing each outcome
// as a JSON line. With --transport it makes a health check and a call of a
// method the service lacks with consumer.Transport, over NATS without the
// gateway (NARUN_NATS_URL), and prints them the same way.
//
// It is a module of its own so that narun itself does not depend on gRPC:
// a gRPC service imports narun's consumer package as any other would.
package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/interop"
	testgrpc "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/narun/narun/consumer"
)

func main() {
	interopAddr := flag.String("interop", "", "run the interop cases against the gateway at host:port (h2c)")
	statusAddr := flag.String("status", "", "check health and call an unrouted method through the gateway at host:port (h2c)")
	transport := flag.Bool("transport", false, "check health and call a missing method with consumer.Transport over NATS")
	flag.Parse()
	switch {
	case *transport:
		checkTransport()
	case *interopAddr != "":
		runInterop(dial(*interopAddr))
	case *statusAddr != "":
		checkStatus(dial(*statusAddr))
	default:
		serve()
	}
}

func serve() {
	s := grpc.NewServer()
	testgrpc.RegisterTestServiceServer(s, interop.NewTestServer())
	h := health.NewServer()
	h.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, h)
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// *grpc.Server is an http.Handler for HTTP/2 requests, which is what
	// the gateway forwards from a gRPC client.
	cfg := consumer.Config{Name: "grpctest", Version: "1.0.0", Description: "gRPC interop test service"}
	if err := consumer.ListenAndServe(ctx, cfg, s); err != nil {
		log.Fatal(err)
	}
}

func dial(addr string) *grpc.ClientConn {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatalf("dial %s: %v", addr, err)
	}
	return conn
}

// runInterop prints "ok CASE" for each case; a failing case ends the
// program with its reason (the interop package's way).
func runInterop(conn *grpc.ClientConn) {
	tc := testgrpc.NewTestServiceClient(conn)
	cases := []struct {
		name string
		run  func(context.Context)
	}{
		{"empty_unary", func(ctx context.Context) { interop.DoEmptyUnaryCall(ctx, tc) }},
		{"large_unary", func(ctx context.Context) { interop.DoLargeUnaryCall(ctx, tc) }},
		{"client_streaming", func(ctx context.Context) { interop.DoClientStreaming(ctx, tc) }},
		{"server_streaming", func(ctx context.Context) { interop.DoServerStreaming(ctx, tc) }},
		{"ping_pong", func(ctx context.Context) { interop.DoPingPong(ctx, tc) }},
		{"empty_stream", func(ctx context.Context) { interop.DoEmptyStream(ctx, tc) }},
		{"custom_metadata", func(ctx context.Context) { interop.DoCustomMetadata(ctx, tc) }},
		{"status_code_and_message", func(ctx context.Context) { interop.DoStatusCodeAndMessage(ctx, tc) }},
		{"special_status_message", func(ctx context.Context) { interop.DoSpecialStatusMessage(ctx, tc) }},
		{"unimplemented_method", func(ctx context.Context) { interop.DoUnimplementedMethod(ctx, conn) }},
		{"unimplemented_service", func(ctx context.Context) {
			interop.DoUnimplementedService(ctx, testgrpc.NewUnimplementedServiceClient(conn))
		}},
		{"cancel_after_begin", func(ctx context.Context) { interop.DoCancelAfterBegin(ctx, tc) }},
		{"cancel_after_first_response", func(ctx context.Context) { interop.DoCancelAfterFirstResponse(ctx, tc) }},
		{"timeout_on_sleeping_server", func(ctx context.Context) { interop.DoTimeoutOnSleepingServer(ctx, tc) }},
	}
	for _, c := range cases {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		c.run(ctx)
		cancel()
		fmt.Println("ok", c.name)
	}
}

// result is one call's outcome, printed as a JSON line.
type result struct {
	Call    string `json:"call"`
	Code    string `json:"code"`
	Message string `json:"message,omitempty"`
	Status  string `json:"status,omitempty"`
}

func checkStatus(conn *grpc.ClientConn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	out := json.NewEncoder(os.Stdout)
	emit := func(call string, err error, serving string) {
		r := result{Call: call, Code: status.Code(err).String(), Status: serving}
		if err != nil {
			r.Message = status.Convert(err).Message()
		}
		_ = out.Encode(r)
	}
	resp, err := healthpb.NewHealthClient(conn).Check(ctx, &healthpb.HealthCheckRequest{})
	emit("health", err, resp.GetStatus().String())
	err = conn.Invoke(ctx, "/narun.Missing/Call", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	emit("unrouted", err, "")
}

// checkTransport calls the service with consumer.Transport, as another
// app would over NATS: the gRPC messages framed by hand, the status read
// from the trailers.
func checkTransport() {
	nc, err := consumer.Connect()
	if err != nil {
		log.Fatal(err)
	}
	defer nc.Close()
	client := &http.Client{Transport: &consumer.Transport{Conn: nc}, Timeout: 10 * time.Second}
	out := json.NewEncoder(os.Stdout)
	call := func(name, method string, req, resp proto.Message) {
		r := result{Call: name}
		defer func() { _ = out.Encode(r) }()
		msg, err := proto.Marshal(req)
		if err != nil {
			log.Fatal(err)
		}
		body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
		hr, _ := http.NewRequest(http.MethodPost, "http://grpctest"+method, bytes.NewReader(append(body, msg...)))
		hr.Header.Set("Content-Type", "application/grpc")
		hr.Header.Set("Te", "trailers")
		res, err := client.Do(hr)
		if err != nil {
			r.Code, r.Message = "transport", err.Error()
			return
		}
		defer res.Body.Close()
		got, err := io.ReadAll(res.Body)
		if err != nil {
			r.Code, r.Message = "read", err.Error()
			return
		}
		n, err := strconv.Atoi(res.Trailer.Get("Grpc-Status"))
		if err != nil {
			r.Code, r.Message = "no status", fmt.Sprintf("HTTP %d, trailers %v, header %v", res.StatusCode, res.Trailer, res.Header)
			return
		}
		r.Code, r.Message = codes.Code(n).String(), res.Trailer.Get("Grpc-Message")
		if len(got) >= 5 && proto.Unmarshal(got[5:], resp) == nil {
			if h, ok := resp.(*healthpb.HealthCheckResponse); ok {
				r.Status = h.GetStatus().String()
			}
		}
	}
	call("transport_health", "/grpc.health.v1.Health/Check", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
	call("transport_missing", "/grpc.health.v1.Health/Missing", &healthpb.HealthCheckRequest{}, &healthpb.HealthCheckResponse{})
}
