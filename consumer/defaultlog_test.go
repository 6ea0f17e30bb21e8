package consumer_test

import (
	"bytes"
	"log"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/narun/narun/consumer"
)

// lockedBuffer is a bytes.Buffer the standard logger may write from many
// goroutines while the test reads it.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// Without an ErrorHandler a handler's panic, its stack included, goes to
// the standard logger, as net/http's Server logs one without an ErrorLog:
// a service whose author set none lost every stack. Not parallel: it
// swaps the standard logger's output.
func TestWithoutErrorHandlerErrorsGoToTheStandardLogger(t *testing.T) {
	var logged lockedBuffer
	prev := log.Writer()
	log.SetOutput(&logged)
	t.Cleanup(func() { log.SetOutput(prev) })
	_, nc, _ := start(t, consumer.Config{Name: "nohandler"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		panic("boom")
	}))
	if _, err := nc.RequestMsg(&nats.Msg{Subject: "nohandler", Header: nats.Header{consumer.HeaderPath: {"/x"}}}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(logged.String(), "panic serving GET /x"); {
		if time.Now().After(deadline) {
			t.Fatalf("panic not logged; the standard logger has %q", logged.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !strings.Contains(logged.String(), "goroutine ") {
		t.Errorf("the panic's stack not logged: %q", logged.String())
	}
}
