package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cluster starts `narun nats` on each of hosts as one cluster, accepting
// leaf nodes on port 7422. Each host's narun.toml also has the [runner]
// table of docs/CLUSTER.md (node id = host name, label role=edge), so
// startRunner can use the same file.
func cluster(t *testing.T, hosts []*Host) map[*Host]*Proc {
	t.Helper()
	procs := map[*Host]*Proc{}
	// As docs/CLUSTER.md says: the runner and its apps use their own
	// device's server, and another member only while it is down. With one
	// list for all, every app used the first member's server, and a restart
	// of that one server left the service without responders for as long as
	// the apps took to reconnect.
	for _, h := range hosts {
		h.WriteFile("narun.toml", natsSection(h, hosts)+fmt.Sprintf(`[nats.leafnodes]
listen = "0.0.0.0:7422"
[runner]
nats_url = %q
node_id = %q
admin_listen = "0.0.0.0:9101"
heartbeat_interval = "1s"
[runner.labels]
role = "edge"
`, ownFirst(h, hosts), h.Name))
		procs[h] = startNATS(t, h)
	}
	for _, h := range hosts {
		waitJetStream(t, h, 60*time.Second)
	}
	return procs
}

func startRunner(t *testing.T, h *Host) *Proc {
	t.Helper()
	return h.Start("runner", "runner", "--config", h.DataDir+"/narun.toml")
}

func startNATS(t *testing.T, h *Host) *Proc {
	t.Helper()
	return h.Start("nats", "nats", "--config", h.DataDir+"/narun.toml")
}

// waitJetStream waits until the host's server reports JetStream healthy.
func waitJetStream(t *testing.T, h *Host, timeout time.Duration) {
	t.Helper()
	url := "http://" + h.Addr + ":8222/healthz"
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: JetStream not healthy after %s (last: %v)", h.Name, timeout, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// natsSection is the start of h's narun.toml as a member of a cluster of
// members: its data dir and its NATS server, routed to the others.
func natsSection(h *Host, members []*Host) string {
	var routes []string
	for _, m := range members {
		routes = append(routes, fmt.Sprintf(`"nats-route://%s:6222"`, m.Addr))
	}
	return fmt.Sprintf(`data_dir = %q
[nats]
listen = "0.0.0.0:4222"
server_name = %q
http_listen = "0.0.0.0:8222"
[nats.cluster]
name = "e2e"
listen = "0.0.0.0:6222"
routes = [%s]
`, h.DataDir, h.Name, strings.Join(routes, ", "))
}

// ownFirst is the members' client URLs with h's server first.
func ownFirst(h *Host, members []*Host) string {
	urls := []string{"nats://" + h.Addr + ":4222"}
	for _, m := range members {
		if m != h {
			urls = append(urls, "nats://"+m.Addr+":4222")
		}
	}
	return strings.Join(urls, ",")
}

func clusterURLs(hosts []*Host) string {
	var urls []string
	for _, h := range hosts {
		urls = append(urls, "nats://"+h.Addr+":4222")
	}
	return strings.Join(urls, ",")
}

// TestRollingNATSRestartKeepsKV restarts each server in turn while a
// client writes to an R3 bucket: every acknowledged write must survive.
func TestRollingNATSRestartKeepsKV(t *testing.T) {
	t.Parallel()
	n := NewNet(t, "h1", "h2", "h3")
	procs := cluster(t, n.hosts)

	nc, err := nats.Connect(clusterURLs(n.hosts), nats.MaxReconnects(-1), nats.ReconnectWait(100*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	// A cluster just formed may drop a request while it settles its
	// leaders, and nats.go then waits for the whole context: the create
	// is sent again, as narun's own clients do (store.KV).
	var kv jetstream.KeyValue
	eventually(t, time.Minute, "R3 bucket created", func() error {
		cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
		defer ccancel()
		var err error
		kv, err = js.CreateKeyValue(cctx, jetstream.KeyValueConfig{Bucket: "e2e-rolling", Replicas: 3})
		return err
	})

	stop := make(chan struct{})
	type result struct{ acked, failed int }
	done := make(chan result)
	go func() {
		var r result
		for i := 0; ; i++ {
			select {
			case <-stop:
				done <- r
				return
			default:
			}
			putCtx, putCancel := context.WithTimeout(ctx, 2*time.Second)
			_, err := kv.Put(putCtx, fmt.Sprintf("k%06d", r.acked), []byte(fmt.Sprint(r.acked)))
			putCancel()
			if err != nil {
				r.failed++
				time.Sleep(20 * time.Millisecond)
				continue
			}
			r.acked++
			if r.acked >= 100000 {
				<-stop
				done <- r
				return
			}
		}
	}()

	start := time.Now()
	for _, h := range n.hosts {
		procs[h].Stop(t)
		procs[h] = startNATS(t, h)
		waitJetStream(t, h, 60*time.Second)
	}
	took := time.Since(start)
	close(stop)
	r := <-done
	t.Logf("rolling restart: %d writes acknowledged, %d attempts failed and were retried", r.acked, r.failed)
	if r.acked == 0 {
		t.Fatal("no write was acknowledged during the rolling restart")
	}
	// Read through the stream leader: a KV Get is a direct get that any
	// replica may answer, including the one restarted last, which can
	// still be catching up and would report a key missing that the
	// bucket holds.
	for i := 0; i < r.acked; i++ {
		key := fmt.Sprintf("k%06d", i)
		eventually(t, 15*time.Second, "leader read of acknowledged write "+key, func() error {
			gctx, gcancel := context.WithTimeout(ctx, 2*time.Second)
			defer gcancel()
			v, err := leaderGet(gctx, nc, "e2e-rolling", key)
			if err != nil {
				return err
			}
			if v != fmt.Sprint(i) {
				return fmt.Errorf("%s = %q, want %d", key, v, i)
			}
			return nil
		})
	}
	record(t, "scenario", "4b. rolling restart of the three nats servers while a client writes to an R3 KV bucket",
		fmt.Sprintf("%d writes acknowledged, every one read back afterwards; %d attempts failed during leader changes and were retried", r.acked, r.failed),
		"0 acknowledged writes", took.Round(100*time.Millisecond).String()+" for the three restarts")
}

// leaderGet reads the last value of key in bucket from its stream's leader
// ($JS.API.STREAM.MSG.GET), the consistent read.
func leaderGet(ctx context.Context, nc *nats.Conn, bucket, key string) (string, error) {
	req, err := json.Marshal(map[string]string{"last_by_subj": "$KV." + bucket + "." + key})
	if err != nil {
		return "", err
	}
	msg, err := nc.RequestWithContext(ctx, "$JS.API.STREAM.MSG.GET.KV_"+bucket, req)
	if err != nil {
		return "", err
	}
	var resp struct {
		Message *struct {
			Data []byte `json:"data"`
		} `json:"message"`
		Error *struct {
			Description string `json:"description"`
		} `json:"error"`
	}
	if err := json.Unmarshal(msg.Data, &resp); err != nil {
		return "", fmt.Errorf("stream msg get: %w", err)
	}
	if resp.Error != nil {
		return "", fmt.Errorf("stream msg get: %s", resp.Error.Description)
	}
	if resp.Message == nil {
		return "", fmt.Errorf("stream msg get: empty answer")
	}
	return string(resp.Message.Data), nil
}
