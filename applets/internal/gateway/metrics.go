package gateway

import (
	"bufio"
	"io"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The Prometheus text exposition is written here by hand: the gateway needs
// a handful of counters and one histogram, and client_golang would add
// protobuf, its registry and several dependencies (a few MiB) to a binary
// meant for small devices.

// NATS outcomes of a proxied request.
const (
	outcomeOK           = iota // a reply arrived
	outcomeNoResponders        // no service instance is subscribed
	outcomeTimeout             // no (complete) reply before the deadline
	outcomeCancelled           // the client went away first, or shutdown cut the request
	outcomeMalformed           // the reply did not follow the protocol
	outcomeError               // publishing failed or NATS is not connected
	numOutcomes
)

var outcomeNames = [numOutcomes]string{"ok", "no_responders", "timeout", "cancelled", "malformed", "error"}

// latencyBounds are the histogram's upper bounds in seconds.
var latencyBounds = []float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30}

type routeMetrics struct {
	label string
	// codes counts the status codes by hundreds, each hundred allocated
	// when first sent: a count for each of 600 codes took 4.8 KiB a
	// route, 24 MiB for 5000 routes (docs/PERFORMANCE.md, "Many routes"),
	// and a route sends a few codes of two or three hundreds.
	codes    [6]atomic.Pointer[[100]atomic.Uint64]
	buckets  [16]atomic.Uint64 // len(latencyBounds)+1, the last is +Inf
	sumNanos atomic.Uint64
	bytesIn  atomic.Uint64
	bytesOut atomic.Uint64
}

func (m *routeMetrics) observe(code int, d time.Duration, in, out int64) {
	if code < 0 || code >= 100*len(m.codes) {
		code = 0
	}
	m.codeCount(code).Add(1)
	s := d.Seconds()
	i, _ := slices.BinarySearch(latencyBounds, s)
	m.buckets[i].Add(1)
	m.sumNanos.Add(uint64(d))
	m.bytesIn.Add(uint64(max(in, 0)))
	m.bytesOut.Add(uint64(max(out, 0)))
}

// codeCount is the counter of code, 0 <= code < 600.
func (m *routeMetrics) codeCount(code int) *atomic.Uint64 {
	h := &m.codes[code/100]
	counts := h.Load()
	if counts == nil {
		counts = new([100]atomic.Uint64)
		if !h.CompareAndSwap(nil, counts) {
			counts = h.Load()
		}
	}
	return &counts[code%100]
}

// metrics survive route reloads: series are keyed by route label, and
// go with the last route of their label (retain).
type metrics struct {
	mu       sync.Mutex
	routes   map[string]*routeMetrics
	inflight atomic.Int64
	outcomes [numOutcomes]atomic.Uint64
	// reloadErrors counts reloads of the configuration file, or of the
	// certificate pair, that failed and left what was in place.
	reloadErrors atomic.Uint64
	// conns are the connections of the HTTP and HTTPS listeners.
	conns *connLimit
	// bodies is the body memory, nil when unbounded.
	bodies *bodyBudget
	// windows is the response windows' memory, nil when unbounded.
	windows *windowBudget
	// natsConnected says whether the gateway's NATS connection is up;
	// nil without one (Check).
	natsConnected func() bool
}

func newMetrics() *metrics {
	return &metrics{routes: map[string]*routeMetrics{}}
}

// forRoute returns the series of a route label; label "" collects the
// requests that matched no route.
func (m *metrics) forRoute(label string) *routeMetrics {
	m.mu.Lock()
	defer m.mu.Unlock()
	rm := m.routes[label]
	if rm == nil {
		rm = &routeMetrics{label: label}
		m.routes[label] = rm
	}
	return rm
}

// retain drops the series of the labels that no route has any more,
// keeping those of labels and the one of requests that matched no route.
// A device runs for months while apps, and with them their routes, come
// and go: the series of every route it ever served would otherwise stay,
// in memory and in each scrape.
func (m *metrics) retain(labels map[string]bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	maps.DeleteFunc(m.routes, func(label string, _ *routeMetrics) bool { return label != "" && !labels[label] })
}

func (m *metrics) write(w io.Writer) error {
	m.mu.Lock()
	rms := make([]*routeMetrics, 0, len(m.routes))
	for _, rm := range m.routes {
		rms = append(rms, rm)
	}
	m.mu.Unlock()
	slices.SortFunc(rms, func(a, b *routeMetrics) int { return strings.Compare(a.label, b.label) })

	b := bufio.NewWriter(w)
	b.WriteString("# HELP narun_gateway_requests_total HTTP requests by route and status code.\n# TYPE narun_gateway_requests_total counter\n")
	for _, rm := range rms {
		for hundred := range rm.codes {
			counts := rm.codes[hundred].Load()
			if counts == nil {
				continue
			}
			for i := range counts {
				if n := counts[i].Load(); n > 0 {
					b.WriteString(`narun_gateway_requests_total{route="` + escapeLabel(rm.label) + `",code="` + strconv.Itoa(100*hundred+i) + `"} ` + strconv.FormatUint(n, 10) + "\n")
				}
			}
		}
	}
	b.WriteString("# HELP narun_gateway_request_duration_seconds Time from request to the end of the response, by route.\n# TYPE narun_gateway_request_duration_seconds histogram\n")
	for _, rm := range rms {
		l := `route="` + escapeLabel(rm.label) + `"`
		var cum uint64
		for i := range rm.buckets {
			cum += rm.buckets[i].Load()
			le := "+Inf"
			if i < len(latencyBounds) {
				le = strconv.FormatFloat(latencyBounds[i], 'g', -1, 64)
			}
			b.WriteString("narun_gateway_request_duration_seconds_bucket{" + l + `,le="` + le + `"} ` + strconv.FormatUint(cum, 10) + "\n")
		}
		b.WriteString("narun_gateway_request_duration_seconds_sum{" + l + "} " + strconv.FormatFloat(time.Duration(rm.sumNanos.Load()).Seconds(), 'g', -1, 64) + "\n")
		b.WriteString("narun_gateway_request_duration_seconds_count{" + l + "} " + strconv.FormatUint(cum, 10) + "\n")
	}
	b.WriteString("# HELP narun_gateway_request_bytes_total Request body bytes received, by route.\n# TYPE narun_gateway_request_bytes_total counter\n")
	for _, rm := range rms {
		b.WriteString(`narun_gateway_request_bytes_total{route="` + escapeLabel(rm.label) + `"} ` + strconv.FormatUint(rm.bytesIn.Load(), 10) + "\n")
	}
	b.WriteString("# HELP narun_gateway_response_bytes_total Response body bytes sent, by route.\n# TYPE narun_gateway_response_bytes_total counter\n")
	for _, rm := range rms {
		b.WriteString(`narun_gateway_response_bytes_total{route="` + escapeLabel(rm.label) + `"} ` + strconv.FormatUint(rm.bytesOut.Load(), 10) + "\n")
	}
	b.WriteString("# HELP narun_gateway_in_flight_requests Requests being proxied now.\n# TYPE narun_gateway_in_flight_requests gauge\n")
	b.WriteString("narun_gateway_in_flight_requests " + strconv.FormatInt(m.inflight.Load(), 10) + "\n")
	b.WriteString("# HELP narun_gateway_connections Client connections open on the HTTP and HTTPS listeners, counted against max_connections: not those answered and waiting out their close.\n# TYPE narun_gateway_connections gauge\n")
	b.WriteString("narun_gateway_connections " + strconv.Itoa(m.conns.count()) + "\n")
	b.WriteString("# HELP narun_gateway_connections_refused_total New connections closed at once for max_connections, none being idle or without a request head past the grace.\n# TYPE narun_gateway_connections_refused_total counter\n")
	b.WriteString("narun_gateway_connections_refused_total " + strconv.FormatUint(m.conns.refused.Load(), 10) + "\n")
	b.WriteString("# HELP narun_gateway_connections_unanswered_total Connections closed because their client sent more than twice the HTTP/2 connection window (51 MiB) with nothing written to it: HTTP/2 frames that ask for no answer, such as empty CONTINUATION frames, sent without end.\n# TYPE narun_gateway_connections_unanswered_total counter\n")
	b.WriteString("narun_gateway_connections_unanswered_total " + strconv.FormatUint(m.conns.quiet.count.Load(), 10) + "\n")
	b.WriteString("# HELP narun_gateway_connections_reclaimed_total Connections closed to make room for a new one at max_connections, by reason: answered and waiting out its close, idle keep-alive, or no complete request head past the grace.\n# TYPE narun_gateway_connections_reclaimed_total counter\n")
	for i, name := range reclaimNames {
		b.WriteString(`narun_gateway_connections_reclaimed_total{reason="` + name + `"} ` + strconv.FormatUint(m.conns.reclaimed[i].Load(), 10) + "\n")
	}
	if bb := m.bodies; bb != nil {
		b.WriteString("# HELP narun_gateway_body_memory_bytes Bytes of request body buffers held now, against max_body_memory.\n# TYPE narun_gateway_body_memory_bytes gauge\n")
		b.WriteString("narun_gateway_body_memory_bytes " + strconv.FormatInt(bb.held.Load(), 10) + "\n")
		b.WriteString("# HELP narun_gateway_body_memory_limit_bytes max_body_memory: the bound on the bytes of request body buffers held at once.\n# TYPE narun_gateway_body_memory_limit_bytes gauge\n")
		b.WriteString("narun_gateway_body_memory_limit_bytes " + strconv.FormatInt(bb.size, 10) + "\n")
		b.WriteString("# HELP narun_gateway_body_memory_waits_total Requests whose body waited for room in max_body_memory.\n# TYPE narun_gateway_body_memory_waits_total counter\n")
		b.WriteString("narun_gateway_body_memory_waits_total " + strconv.FormatUint(bb.waits.Load(), 10) + "\n")
		b.WriteString("# HELP narun_gateway_body_memory_refused_total Requests answered 503 at once: their body found no room in max_body_memory and as many requests as may wait for it waited already.\n# TYPE narun_gateway_body_memory_refused_total counter\n")
		b.WriteString("narun_gateway_body_memory_refused_total " + strconv.FormatUint(bb.refused.Load(), 10) + "\n")
	}
	if wb := m.windows; wb != nil {
		b.WriteString("# HELP narun_gateway_response_windows_bytes Bytes of max_body_memory that the response windows of the requests in flight hold now: what services may send ahead of slow clients.\n# TYPE narun_gateway_response_windows_bytes gauge\n")
		b.WriteString("narun_gateway_response_windows_bytes " + strconv.FormatInt(wb.held.Load(), 10) + "\n")
	}
	b.WriteString("# HELP narun_gateway_nats_requests_total NATS exchanges by outcome.\n# TYPE narun_gateway_nats_requests_total counter\n")
	for i, name := range outcomeNames {
		b.WriteString(`narun_gateway_nats_requests_total{outcome="` + name + `"} ` + strconv.FormatUint(m.outcomes[i].Load(), 10) + "\n")
	}
	if m.natsConnected != nil {
		up := "0"
		if m.natsConnected() {
			up = "1"
		}
		b.WriteString("# HELP narun_gateway_nats_connected Whether the gateway is connected to NATS: while it is not, every routed request gets 503.\n# TYPE narun_gateway_nats_connected gauge\n")
		b.WriteString("narun_gateway_nats_connected " + up + "\n")
	}
	b.WriteString("# HELP narun_gateway_reload_errors_total Reloads of the configuration file or the TLS certificate pair that failed; what was in place was kept.\n# TYPE narun_gateway_reload_errors_total counter\n")
	b.WriteString("narun_gateway_reload_errors_total " + strconv.FormatUint(m.reloadErrors.Load(), 10) + "\n")
	return b.Flush()
}

var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

func escapeLabel(s string) string { return labelEscaper.Replace(s) }
