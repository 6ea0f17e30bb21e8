package ctl

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/state"
	"github.com/narun/narun/embednats/natstest"
)

// app list read narun-apps again, the bucket opened and the history of
// the app read, for each deleted app whose instances nodes still stop:
// after a delete of many apps, one listing sent the bucket as many
// requests again as there were apps. What it reads of narun-apps is the
// same for one such app as for three, and app status, which shares the
// code, opens the bucket once too.
func TestAppListReadsDeletedAppsOnce(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	apps := h.kv(names.AppsBucket)
	all := []string{"one", "two", "three"}
	for _, app := range all {
		if _, err := apps.Put(ctx, app, []byte(strings.Replace(helloSpec, `"hello"`, `"`+app+`"`, 1))); err != nil {
			t.Fatal(err)
		}
		if err := apps.Delete(ctx, app); err != nil {
			t.Fatal(err)
		}
	}

	spy := natstest.Connect(t, h.srv)
	sub, err := spy.SubscribeSync("$JS.API.>")
	if err != nil {
		t.Fatal(err)
	}
	if err := spy.Flush(); err != nil {
		t.Fatal(err)
	}
	// requests counts the requests about narun-apps since the last count:
	// a marker the spy publishes after ctl ended arrives after every
	// request ctl sent.
	requests := func() []string {
		t.Helper()
		const marker = "$JS.API.narun_test_marker"
		if err := spy.Publish(marker, nil); err != nil {
			t.Fatal(err)
		}
		var seen []string
		for {
			msg, err := sub.NextMsg(10 * time.Second)
			if err != nil {
				t.Fatalf("waiting for the marker: %v", err)
			}
			if msg.Subject == marker {
				return seen
			}
			if strings.Contains(msg.Subject, "KV_"+names.AppsBucket) {
				seen = append(seen, msg.Subject)
			}
		}
	}
	list := func(stopping []string) []string {
		t.Helper()
		n := state.Node{ID: "node-1", Arch: "amd64"}
		for _, app := range stopping {
			n.Instances = append(n.Instances, state.Instance{App: app, Node: "node-1", ID: "0-" + app, State: state.Stopping, PID: 42, Version: "1.0.0"})
		}
		h.heartbeat(n)
		requests()
		r := h.ok("", "app", "list", "--json")
		var listed []struct {
			Name     string
			Deleted  bool
			Revision uint64
		}
		if err := json.Unmarshal([]byte(r.out), &listed); err != nil {
			t.Fatalf("decode %q: %v", r.out, err)
		}
		if len(listed) != len(stopping) {
			t.Fatalf("app list --json while %v stop: %s", stopping, r.out)
		}
		for _, s := range listed {
			if !s.Deleted || s.Revision == 0 {
				t.Errorf("app list --json while %v stop: %+v, want deleted with the revision of its deletion", stopping, s)
			}
		}
		return requests()
	}
	opens := func(seen []string) (n int) {
		for _, subj := range seen {
			if subj == "$JS.API.STREAM.INFO.KV_"+names.AppsBucket {
				n++
			}
		}
		return n
	}
	one := list(all[:1])
	three := list(all)
	if len(three) != len(one) || opens(three) != 1 {
		t.Errorf("app list sent narun-apps %d requests with one deleted app stopping and %d with three, want as many, the bucket opened once:\none:\n%s\nthree:\n%s",
			len(one), len(three), strings.Join(one, "\n"), strings.Join(three, "\n"))
	}

	r := h.fails(ExitNotFound, "", "app", "status", "two")
	if !strings.Contains(r.out, "deleted (revision ") {
		t.Errorf("app status of a deleted app still stopping:\n%s", r.out)
	}
	if seen := requests(); opens(seen) != 1 {
		t.Errorf("app status opened narun-apps %d times, want once:\n%s", opens(seen), strings.Join(seen, "\n"))
	}
}
