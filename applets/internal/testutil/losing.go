package testutil

import (
	"bytes"
	"net"
	"strconv"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
)

// LosingConn connects to url with a connection that loses, on its way to
// the server, the first message it publishes to a subject lose matches:
// a request a server dropped without a word, as a JetStream member does
// while its cluster elects a leader.
func LosingConn(t testing.TB, url string, lose func(subject string) bool) *nats.Conn {
	t.Helper()
	nc, err := nats.Connect(url, nats.SetCustomDialer(losingDialer{lose: lose, lost: new(sync.Once)}))
	if err != nil {
		t.Fatalf("connect to %s: %v", url, err)
	}
	t.Cleanup(nc.Close)
	return nc
}

type losingDialer struct {
	lose func(subject string) bool
	lost *sync.Once
}

func (d losingDialer) Dial(network, address string) (net.Conn, error) {
	c, err := net.Dial(network, address)
	if err != nil {
		return nil, err
	}
	return &losingWriter{Conn: c, lose: d.lose, lost: d.lost}, nil
}

// losingWriter passes the client's protocol on a line at a time, and a
// message once all of it was written, except the one it loses.
type losingWriter struct {
	net.Conn
	lose    func(subject string) bool
	lost    *sync.Once
	pending []byte
}

func (w *losingWriter) Write(p []byte) (int, error) {
	w.pending = append(w.pending, p...)
	var out []byte
	for {
		end := bytes.Index(w.pending, []byte("\r\n"))
		if end < 0 {
			break
		}
		frame := end + 2
		fields := bytes.Fields(w.pending[:end])
		isMsg := len(fields) >= 3 && (string(fields[0]) == "PUB" || string(fields[0]) == "HPUB")
		if isMsg {
			size, err := strconv.Atoi(string(fields[len(fields)-1]))
			if err != nil {
				return 0, err
			}
			frame += size + 2
			if len(w.pending) < frame {
				break
			}
		}
		dropped := false
		if isMsg && w.lose(string(fields[1])) {
			w.lost.Do(func() { dropped = true })
		}
		if !dropped {
			out = append(out, w.pending[:frame]...)
		}
		w.pending = w.pending[frame:]
	}
	if _, err := w.Conn.Write(out); err != nil {
		return 0, err
	}
	return len(p), nil
}
