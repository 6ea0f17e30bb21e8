package consumer_test

import (
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// The client of a request that panicked gets a 500 naming the gateway's
// request id, and the access log has it: the panic's report must carry it
// too, or the author cannot find the stack that goes with the client's 500.
func TestPanicReportNamesRequestID(t *testing.T) {
	reported := make(chan error, 1)
	_, nc, _ := start(t, consumer.Config{Name: "panicid", ErrorHandler: func(err error) { reported <- err }}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	}))
	m, err := nc.RequestMsg(&nats.Msg{Subject: "panicid", Header: nats.Header{consumer.HeaderPath: {"/x"}, "X-Request-Id": {"RID-42"}}}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got := m.Header.Get(consumer.HeaderServiceErrorCode); got != "500" {
		t.Fatalf("error code %q, want 500", got)
	}
	select {
	case err := <-reported:
		if msg, _, _ := strings.Cut(err.Error(), "\n"); !strings.Contains(msg, "panic serving GET /x (request id \"RID-42\"): boom") {
			t.Errorf("panic reported as %q, want the method, path and request id", msg)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("panic not reported to the ErrorHandler")
	}
}
