package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/cli"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/spec"
	"github.com/narun/narun/applets/internal/state"
)

func appEventsCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "events",
		Usage:     "print the state changes of an app's instances (started, healthy, exited, stopped...) as they happen, until interrupted",
		ArgsUsage: "NAME",
		Flags: []ucli.Flag{
			&ucli.StringFlag{Name: "node", Usage: "only this node"},
			&ucli.DurationFlag{Name: "since", Usage: "first print the events of this long ago up to now that " + names.EventsStream + " keeps (a week, at most 1000 of the app on each node), e.g. 1h"},
			&ucli.BoolFlag{Name: flagJSON, Usage: "print each event as a line of JSON, for scripts"},
		},
		Action: appAction(stdio, appEvents, func(c *ucli.Context, _ string) error {
			if node := c.String("node"); node != "" {
				if err := spec.ValidName(node); err != nil {
					return usagef("node %q: %v", node, err)
				}
			}
			if since := c.Duration("since"); since < 0 || c.IsSet("since") && since == 0 {
				return usagef("--since %s: want how far back to start, a positive duration (e.g. 1h)", since)
			}
			return nil
		}),
	}
}

// appEvents follows narun.events of app until ctx ends. Subscribed before
// anything else is read, so that no change between the check for a typo
// and the first event is missed.
func appEvents(ctx context.Context, c *ucli.Context, e *env, app string) error {
	node := c.String("node")
	if since := c.Duration("since"); since > 0 {
		return appEventsSince(ctx, e, app, node, since, c.Bool(flagJSON))
	}
	events := make(chan *nats.Msg, 1024)
	sub, err := e.nc.ChanSubscribe(names.EventSubject(app, orStar(node)), events)
	if err != nil {
		return fmt.Errorf("subscribe to the events of %s: %w", app, err)
	}
	defer func() { _ = sub.Unsubscribe() }()
	if err := e.nc.FlushTimeout(e.timeout); err != nil {
		return fmt.Errorf("subscribe to the events of %s: %w", app, err)
	}
	// Following waits for an app about to be deployed, but a typo must
	// not look like an app whose instances are steady.
	if ok, err := e.deployed(ctx, app); err != nil {
		return err
	} else if !ok {
		e.warnf("app %q is not deployed; waiting for its events", app)
	}
	asJSON := c.Bool(flagJSON)
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case m := <-events:
			if err := e.printEvent(m, asJSON); err != nil {
				return fmt.Errorf("print the events of %s: %w", app, err)
			}
		case <-tick.C:
			if e.nc.IsClosed() {
				// Events go on without this ctl: a script must not take
				// the end of the output for the end of the changes.
				return fmt.Errorf("events of %s not followed: lost the connection to NATS: %w", app, cmp.Or(e.nc.LastError(), nats.ErrConnectionClosed))
			}
		}
	}
}

// appEventsSince prints the events of app that NARUN_EVENTS kept from
// since ago, then those stored after, until ctx ends: one consumer of the
// stream gives both, in order, none twice and none missed between.
func appEventsSince(ctx context.Context, e *env, app, node string, since time.Duration, asJSON bool) error {
	octx, cancel := e.op(ctx)
	stream, err := e.js.Stream(octx, names.EventsStream)
	cancel()
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("no kept events of %s: stream %s does not exist (runners of releases before it keep none); follow without --since", app, names.EventsStream)
	}
	if err != nil {
		return fmt.Errorf("open stream %s: %w", names.EventsStream, err)
	}
	if ok, err := e.deployed(ctx, app); err != nil {
		return err
	} else if !ok {
		e.warnf("app %q is not deployed; printing the events kept of it and waiting for more", app)
	}
	cfg := jetstream.OrderedConsumerConfig{
		FilterSubjects: []string{names.EventSubject(app, orStar(node))},
		// Forgotten soon after ctl stops asking, as the logs' consumer.
		InactiveThreshold: consumerIdle,
	}
	e.startAgo(ctx, stream, names.EventsStream, &cfg, since)
	octx, cancel = e.op(ctx)
	cons, err := stream.OrderedConsumer(octx, cfg)
	cancel()
	if err != nil {
		return fmt.Errorf("read stream %s: %w", names.EventsStream, err)
	}
	defer e.dropConsumer(stream, cons)
	it, err := cons.Messages()
	if err != nil {
		return fmt.Errorf("read stream %s: %w", names.EventsStream, err)
	}
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	defer it.Stop()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("events of %s not followed: %w", app, err)
		}
		if err := e.printEvent(&nats.Msg{Subject: m.Subject(), Data: m.Data()}, asJSON); err != nil {
			return fmt.Errorf("print the events of %s: %w", app, err)
		}
	}
}

// printEvent prints an event as one line. Any NATS client may publish on
// the subject: what does not read as a runner's event is warned of, and no
// field acts on the terminal.
func (e *env) printEvent(m *nats.Msg, asJSON bool) error {
	var ev state.Event
	if err := json.Unmarshal(m.Data, &ev); err != nil || ev.Time.IsZero() || ev.ID == "" {
		e.warnf("skipped a message on %s that is not an instance event: %q", cli.Shown(m.Subject), clip(m.Data, 200))
		return nil
	}
	if asJSON {
		// The runner leaves out what is unset (a pending instance's pid,
		// reason, started): a script must not tell missing from empty.
		return json.NewEncoder(e.stdio.Stdout).Encode(eventJSON{nodeInstanceJSON: instanceView(ev.Instance), Time: ev.Time})
	}
	line := []string{ev.Time.Local().Format("2006-01-02T15:04:05.000"), cli.Shown(ev.Node) + "/" + cli.Shown(ev.ID), cli.Shown(string(ev.State))}
	if ev.Reason != "" && ev.Reason != string(ev.State) {
		line = append(line, "("+cli.Shown(ev.Reason)+")")
	}
	if ev.PID > 0 {
		line = append(line, "pid", strconv.Itoa(ev.PID))
	}
	if ev.ExitCode != nil {
		line = append(line, "exit code", strconv.Itoa(*ev.ExitCode))
	}
	if ev.Restarts > 0 {
		line = append(line, "restarts", strconv.Itoa(ev.Restarts))
	}
	if ev.Version != "" {
		line = append(line, "version", cli.Shown(ev.Version))
	}
	_, err := fmt.Fprintln(e.stdio.Stdout, strings.Join(line, " "))
	return err
}

// eventJSON is an event as app events --json prints it: an instance as
// node list --json prints one, and when it changed.
type eventJSON struct {
	nodeInstanceJSON
	Time time.Time `json:"time"`
}

// clip is b cut to at most n bytes, for a message that quotes it.
func clip(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
