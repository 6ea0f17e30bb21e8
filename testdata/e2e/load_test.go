package e2e

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"
)

// load sends POST /hello/ requests to a gateway from a few workers, each
// with at most one request in flight, until stopped, maxRequests were sent
// or maxTime passed: every loop of the suite is bounded.
type load struct {
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	ok       int
	failures []failure
}

type failure struct {
	start, end time.Time
	err        string
}

const (
	maxRequests = 1000000
	maxLoadTime = 3 * time.Minute
	// pace keeps each worker under 200 requests a second, so the load
	// measures failures without starving the 2-core test machine.
	pace = 5 * time.Millisecond
)

func startLoad(url string, workers int) *load {
	ctx, cancel := context.WithTimeout(context.Background(), maxLoadTime)
	l := &load{cancel: cancel}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: workers}}
	var sent sync.Mutex
	n := 0
	for w := range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				sent.Lock()
				n++
				stop := n > maxRequests
				sent.Unlock()
				if stop {
					return
				}
				start := time.Now()
				err := helloRequest(ctx, client, url, fmt.Sprintf("w%d", w))
				if ctx.Err() != nil {
					return
				}
				l.mu.Lock()
				if err != nil {
					l.failures = append(l.failures, failure{start, time.Now(), err.Error()})
				} else {
					l.ok++
				}
				l.mu.Unlock()
				time.Sleep(pace)
			}
		}()
	}
	return l
}

// helloRequest sends one greeting and checks the answer.
func helloRequest(ctx context.Context, c *http.Client, url, name string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader(`{"name":"`+name+`"}`))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<16))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Contains(body, []byte("Hello, "+name)) {
		return fmt.Errorf("%s: %s", resp.Status, bytes.TrimSpace(body))
	}
	return nil
}

// counts returns successes and failures so far.
func (l *load) counts() (ok, failed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.ok, len(l.failures)
}

// waitOK waits until n more requests succeeded, proving traffic flows.
func (l *load) waitOK(n int, timeout time.Duration) error {
	ok0, _ := l.counts()
	deadline := time.Now().Add(timeout)
	for {
		ok, failed := l.counts()
		if ok-ok0 >= n {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d requests succeeded in %s (%d failed so far)", ok-ok0, n, timeout, failed)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the load and returns the successes and the failures.
func (l *load) Stop() (ok int, failures []failure) {
	l.cancel()
	l.wg.Wait()
	return l.ok, l.failures
}

// summary describes failures for logs and messages.
func summary(fs []failure) string {
	if len(fs) == 0 {
		return "none"
	}
	seen := map[string]int{}
	for _, f := range fs {
		seen[f.err]++
	}
	var parts []string
	for e, n := range seen {
		if len(e) > 120 {
			e = e[:120] + "…"
		}
		parts = append(parts, fmt.Sprintf("%d× %s", n, e))
	}
	return fmt.Sprintf("%d failed (%s .. %s): %s", len(fs), fs[0].start.Format("15:04:05.000"), fs[len(fs)-1].end.Format("15:04:05.000"), strings.Join(parts, "; "))
}

var httpClient = &http.Client{Timeout: 5 * time.Second}
