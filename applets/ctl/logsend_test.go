package ctl

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/store"
)

// logs without -f prints the lines stored when it starts and ends, however
// fast the app goes on printing. It ended only at a line with no other
// pending after it, which an app that prints constantly never leaves.
//
// The publisher stays ahead of ctl: it stores kept lines before ctl starts,
// then one more for each line ctl prints, so that ctl, which has at most
// a pull batch and a pipe's worth of lines more than the test has read,
// always has lines pending. Lines are numbered: one numbered kept or more
// was stored after ctl started.
func TestLogsWithoutFollowEndsAtTheLinesItStartedWith(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	ctx := context.Background()
	if _, err := store.LogsStream(ctx, h.js, nil); err != nil {
		t.Fatal(err)
	}
	subject := names.LogSubject("chatty", "n1", "0-abc")
	const kept = 5000
	stored := func() {
		select {
		case <-h.js.PublishAsyncComplete():
		case <-time.After(30 * time.Second):
			t.Fatal("the kept lines were not all stored")
		}
	}
	for i := range kept {
		// nats.go refuses a publish beyond 4000 unacknowledged ones
		// once it has waited 200ms for acks, which a loaded machine
		// may not send in time.
		if i%1000 == 0 {
			stored()
		}
		if _, err := h.js.PublishAsync(subject, []byte(strconv.Itoa(i))); err != nil {
			t.Fatal(err)
		}
	}
	stored()
	published := kept

	cctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(cctx, os.Args[0], "ctl", "--config", h.config, "--nats-url", h.url, "logs", "chatty")
	cmd.Env = []string{asProcess + "=1", quickExit}
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	printed := 0
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 || f[len(f)-1] != strconv.Itoa(printed) {
			t.Errorf("line %d printed as %q", printed, sc.Text())
			break
		}
		if printed >= kept {
			t.Errorf("printed line %d, stored after logs started: without -f it follows an app that goes on printing", printed)
			break
		}
		printed++
		if _, err := h.js.Publish(ctx, subject, []byte(strconv.Itoa(published))); err != nil {
			t.Errorf("publish line %d: %v", published, err)
			break
		}
		published++
	}
	if t.Failed() {
		// Killed: it would print on.
		cancel()
		cmd.Wait()
		return
	}
	err = cmd.Wait()
	if err != nil {
		t.Fatalf("logs chatty: %v\nstderr: %s", err, stderr.String())
	}
	if printed != kept {
		t.Errorf("printed %d lines, want the %d stored before logs started", printed, kept)
	}
}
