package ctl

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
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
	"github.com/narun/narun/applets/internal/store"
)

func logsCommand(stdio cli.IO) *ucli.Command {
	return &ucli.Command{
		Name:      "logs",
		Usage:     "print the output of an app's instances from " + names.LogsStream,
		ArgsUsage: "APP",
		Flags: []ucli.Flag{
			&ucli.BoolFlag{Name: "follow", Aliases: []string{"f"}, Usage: "keep printing new lines until interrupted"},
			&ucli.DurationFlag{Name: "since", Usage: "only lines newer than this (e.g. 10m)", DefaultText: "all kept lines"},
			&ucli.IntFlag{Name: "tail", Aliases: []string{"n"}, Usage: "only the last `N` lines (of those newer than --since), then the new ones with -f", DefaultText: "all kept lines"},
			&ucli.StringFlag{Name: "node", Usage: "only this node"},
			&ucli.StringFlag{Name: "instance", Usage: "only this instance"},
			jsonFlag(),
		},
		Action: action(stdio, false, runLogs),
	}
}

func runLogs(ctx context.Context, c *ucli.Context, e *env) error {
	app, err := oneArg(c, "app name")
	if err != nil {
		return err
	}
	if err := validAppName(app); err != nil {
		return err
	}
	node, inst := c.String("node"), c.String("instance")
	for what, v := range map[string]string{"node": node, "instance": inst} {
		if v != "" {
			if err := spec.ValidName(v); err != nil {
				return usagef("%s %q: %v", what, v, err)
			}
		}
	}
	since := c.Duration("since")
	if since < 0 {
		return usagef("--since %s: want how far back to start, a positive duration (e.g. 10m)", since)
	}
	tail := -1
	if c.IsSet("tail") {
		if tail = c.Int("tail"); tail < 0 {
			return usagef("--tail %d: want how many of the last lines to print, 0 or more", tail)
		}
	}
	// Connected only once the command line is known to be good: a usage
	// error is not a connection error.
	if err := e.connect(); err != nil {
		return err
	}
	defer e.close()
	octx, cancel := e.op(ctx)
	stream, err := store.LogsStream(octx, e.js, e.log)
	cancel()
	if err != nil {
		return err
	}
	asJSON, follow := c.Bool(flagJSON), c.Bool("follow")
	cons, err := e.logsConsumer(ctx, stream, names.LogSubject(app, orStar(node), orStar(inst)), since, tail)
	if err != nil {
		return e.readLogsErr(app, err)
	}
	defer e.dropConsumer(stream, cons)
	// none says that no kept line was selected: printing nothing at all
	// looked like a wrong name or a broken pipe; journalctl says "-- No
	// entries --" for the same reason. On stderr: a script reading stdout
	// gets nothing, as before, and one reading --json needs no words.
	none := func() error {
		said := false
		switch {
		case tail == 0:
			// Asked for no kept line: none is no sign of a typo.
		case !follow:
			if err := e.noLogs(ctx, stream, app); err != nil {
				return err
			}
		default:
			// Following waits for an app about to be deployed; a typo
			// must still be told from an app that prints nothing.
			if err := e.noLogs(ctx, stream, app); cli.ExitCode(err) == ExitNotFound {
				e.warnf("%v; waiting for its lines", err)
				said = true
			}
		}
		warned, err := e.warnUnselected(ctx, stream, app, node, inst)
		if err != nil {
			return err
		}
		if !said && !warned && tail != 0 && !asJSON {
			msg := "no kept log lines of " + app + selection(node, inst, since)
			if follow {
				msg += "; waiting for new ones"
			}
			e.infof("%s", msg)
		}
		return nil
	}
	if !follow {
		// Decided on what was printed, not on the lines pending before:
		// the stream's limits or a purge may drop those in between.
		printed, err := e.printKept(ctx, stream, cons, app, asJSON)
		if err != nil || printed > 0 {
			return err
		}
		return none()
	}
	octx, cancel = e.op(ctx)
	info, err := cons.Info(octx)
	cancel()
	if err != nil {
		return e.readLogsErr(app, err)
	}
	// Until the first line comes, lines seen pending may be dropped before
	// they are read (the stream's limits, a purge): after a timeout
	// without one, the consumer tells whether any is still to come.
	awaitingKept := info.NumPending > 0
	if !awaitingKept {
		if err := none(); err != nil {
			return err
		}
	}
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	it, err := cons.Messages()
	if err != nil {
		return e.readLogsErr(app, err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	for {
		var next []jetstream.NextOpt
		if awaitingKept {
			next = append(next, jetstream.NextMaxWait(e.timeout))
		}
		msg, err := it.Next(next...)
		if errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			left, err := e.keptLeft(ctx, cons, "", 0)
			if err != nil {
				return e.readLogsErr(app, err)
			}
			if !left {
				awaitingKept = false
				if err := none(); err != nil {
					return err
				}
			}
			continue
		}
		awaitingKept = false
		if err != nil {
			// Only an interrupt stops the iterator on purpose; closed by
			// anything else (the connection given up on), the output is
			// cut short and a script must not take it for the end.
			if ctx.Err() != nil {
				return nil
			}
			return e.readLogsErr(app, err)
		}
		if err := e.printLog(msg, asJSON); err != nil {
			// As printKept: the lines that follow would be lost too.
			return fmt.Errorf("print the logs of %s: %w", app, err)
		}
	}
}

// printKept prints the lines of cons that stream held when it started, and
// returns how many. Only those: an app that prints on would keep lines
// pending after each one for good. The stream may drop some of them before
// they are read (its limits, a purge): after a timeout without a line,
// the consumer is asked whether any is still to come (keptLeft), where
// waiting for them, as -f does, waited for lines that never come.
func (e *env) printKept(ctx context.Context, stream jetstream.Stream, cons jetstream.Consumer, app string, asJSON bool) (int, error) {
	octx, cancel := e.op(ctx)
	si, err := stream.Info(octx)
	cancel()
	if err != nil {
		return 0, e.readLogsErr(app, fmt.Errorf("read stream %s: %w", names.LogsStream, err))
	}
	last := si.State.LastSeq
	// None pending: no timeout to wait for to tell.
	left, err := e.keptLeft(ctx, cons, "", 0)
	if err != nil {
		return 0, e.readLogsErr(app, err)
	}
	if !left || last == 0 {
		return 0, nil
	}
	ctx, cancel = context.WithCancel(ctx)
	defer cancel()
	it, err := cons.Messages()
	if err != nil {
		return 0, e.readLogsErr(app, err)
	}
	defer it.Stop()
	go func() {
		<-ctx.Done()
		it.Stop()
	}()
	printed := 0
	// The consumer that sent the last line, and its count of the lines
	// it sent then.
	var from string
	var sent uint64
	for {
		msg, err := it.Next(jetstream.NextMaxWait(e.timeout))
		if errors.Is(err, nats.ErrTimeout) && ctx.Err() == nil {
			left, err := e.keptLeft(ctx, cons, from, sent)
			if err != nil {
				return printed, e.readLogsErr(app, err)
			}
			if !left {
				return printed, nil
			}
			continue
		}
		if err != nil {
			// As -f: only an interrupt stops the iterator on purpose.
			if ctx.Err() != nil {
				return printed, nil
			}
			return printed, e.readLogsErr(app, err)
		}
		meta, merr := msg.Metadata()
		if merr == nil && meta.Sequence.Stream > last {
			// Stored after ctl started: the stream's last line then
			// was not one of these (another app's, or dropped since).
			return printed, nil
		}
		if err := e.printLog(msg, asJSON); err != nil {
			// A full disk or a closed output: the lines that follow
			// would be lost too, and a script must not take the file
			// for all of them.
			return printed, fmt.Errorf("print the logs of %s: %w", app, err)
		}
		printed++
		if merr != nil || meta.NumPending == 0 || meta.Sequence.Stream == last {
			return printed, nil
		}
		from, sent = meta.Consumer, meta.Sequence.Consumer
	}
}

// keptLeft reports whether cons has lines still to send, or sent lines that
// have not come yet (a slow link): those it sent count beyond sent when it
// is from, the consumer that sent the last line read, and all of them when
// it is another (nats.go makes it again after a reconnect).
func (e *env) keptLeft(ctx context.Context, cons jetstream.Consumer, from string, sent uint64) (bool, error) {
	octx, cancel := e.op(ctx)
	info, err := cons.Info(octx)
	cancel()
	if err != nil {
		return false, err
	}
	coming := info.Delivered.Consumer
	if info.Name == from {
		coming -= min(coming, sent)
	}
	return info.NumPending > 0 || coming > 0, nil
}

// consumerIdle is how long the server keeps a consumer ctl reads through
// (logs, a listing of objects) once nobody reads: long enough for a
// reconnect, after which nats.go makes an ordered consumer again anyway.
const consumerIdle = 10 * time.Second

// dropConsumer deletes an ephemeral consumer ctl read through. The server
// would keep it for its inactive threshold after ctl is gone, so a script
// running logs every few seconds would keep a pile of them. It is not
// waited for when NATS is gone: the threshold then removes it.
func (e *env) dropConsumer(stream jetstream.Stream, cons jetstream.Consumer) {
	// An ordered consumer that was recreated has another name than the
	// one it started with.
	info := cons.CachedInfo()
	if info == nil || !e.nc.IsConnected() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := stream.DeleteConsumer(ctx, info.Name); err != nil {
		e.log.Debug("delete the consumer logs read through", "err", err)
	}
}

// readLogsErr says why reading app's logs failed. A lost NATS is named as
// such: a script must not take output cut short for its end.
func (e *env) readLogsErr(app string, err error) error {
	// Reconnecting counts too: the ordered consumer, failing to recreate
	// itself while the server is away, ends the iterator with a timeout
	// before nats.go gives up.
	if !e.nc.IsConnected() {
		return fmt.Errorf("read logs of %s: lost the connection to NATS: %w", app, cmp.Or(e.nc.LastError(), err))
	}
	// A server shutting down stops answering JetStream before it closes
	// its connections.
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, nats.ErrTimeout) {
		return fmt.Errorf("read logs of %s: NATS stopped answering: %w", app, err)
	}
	return fmt.Errorf("read logs of %s: %w", app, err)
}

// noLogs explains an empty answer when the name is probably a typo: lines
// of a deleted app are kept, so only an app with neither is not found.
// Any kept line counts, not only those --since, --node or --instance
// selected: a deleted app whose lines all fall outside them is no typo.
func (e *env) noLogs(ctx context.Context, stream jetstream.Stream, app string) error {
	if ok, err := e.deployed(ctx, app); err != nil || ok {
		return err
	}
	octx, cancel := e.op(ctx)
	defer cancel()
	// The last line alone: the stream's info filtered on the app would
	// list each of its instances' subjects.
	_, err := stream.GetLastMsgForSubject(octx, names.LogSubject(app, "*", "*"))
	switch {
	case errors.Is(err, jetstream.ErrMsgNotFound):
		return notFound("app %q is not deployed and has no kept log lines", app)
	case err != nil:
		return fmt.Errorf("look for kept log lines of %s: %w", app, err)
	}
	return nil
}

// selection is the filters of logs in effect, as a note that no line
// was kept says them: empty when there are none.
func selection(node, inst string, since time.Duration) string {
	var s string
	if node != "" {
		s += fmt.Sprintf(" from node %q", node)
	}
	if inst != "" {
		s += fmt.Sprintf(" from instance %q", inst)
	}
	if since > 0 {
		s += " newer than " + since.String()
	}
	return s
}

// warnUnselected warns when --node or --instance (node, inst) selects
// none of the lines kept for app, naming those that have some: a typo
// there would otherwise print nothing, as a quiet instance does. One
// stream info, listing the app's subjects (one per instance). It reports
// whether it warned.
func (e *env) warnUnselected(ctx context.Context, stream jetstream.Stream, app, node, inst string) (bool, error) {
	if node == "" && inst == "" {
		return false, nil
	}
	octx, cancel := e.op(ctx)
	info, err := stream.Info(octx, jetstream.WithSubjectFilter(names.LogSubject(app, "*", "*")))
	cancel()
	if err != nil {
		return false, fmt.Errorf("list the log subjects of %s: %w", app, err)
	}
	if len(info.State.Subjects) == 0 {
		// No line at all: nothing to name instead.
		return false, nil
	}
	nodes, insts := map[string]bool{}, map[string]bool{}
	for subject := range info.State.Subjects {
		parts := strings.Split(subject, ".")
		if len(parts) != 5 {
			continue
		}
		n, i := parts[3], parts[4]
		if (node == "" || n == node) && (inst == "" || i == inst) {
			// Kept, but left out by --since or --tail.
			return false, nil
		}
		nodes[n] = true
		if node == "" || n == node {
			insts[i] = true
		}
	}
	switch {
	case node != "" && !nodes[node]:
		e.warnf("no kept line of %s is from node %q (%s)", app, node, withLines("nodes with lines", nodes))
	case node != "":
		e.warnf("no kept line of %s is from instance %q on node %q (%s)", app, inst, node, withLines("instances with lines there", insts))
	default:
		e.warnf("no kept line of %s is from instance %q (%s)", app, inst, withLines("instances with lines", insts))
	}
	return true, nil
}

// withLines lists the names in set after label, quoted: they come from
// subjects that any publisher may have written.
func withLines(label string, set map[string]bool) string {
	quoted := make([]string, 0, len(set))
	for _, n := range slices.Sorted(maps.Keys(set)) {
		quoted = append(quoted, strconv.Quote(n))
	}
	return label + ": " + strings.Join(quoted, ", ")
}

// logsConsumer opens a consumer of the lines of stream on filter, those
// the server stored in the last since when it is not 0, and of those the
// last tail when it is not negative. The server compares the start with
// its stamps, so it is counted on its clock: on this machine's, a laptop
// an hour ahead would ask for lines from the future, and get none.
func (e *env) logsConsumer(ctx context.Context, stream jetstream.Stream, filter string, since time.Duration, tail int) (jetstream.Consumer, error) {
	// The server forgets the consumer this long after ctl stops asking
	// (a kill skips dropConsumer), instead of nats.go's five minutes: a
	// loop that runs and kills logs -f would otherwise pile them up. A
	// live follow keeps a pull request waiting, which counts as asking.
	cfg := jetstream.OrderedConsumerConfig{FilterSubjects: []string{filter}, InactiveThreshold: consumerIdle}
	if since > 0 {
		e.startAgo(ctx, stream, names.LogsStream, &cfg, since)
	}
	if tail >= 0 {
		seq, err := e.tailStart(ctx, stream, filter, cfg, uint64(tail))
		if err != nil {
			return nil, err
		}
		if seq > 0 {
			cfg.DeliverPolicy, cfg.OptStartTime, cfg.OptStartSeq = jetstream.DeliverByStartSequencePolicy, nil, seq
		}
	}
	octx, cancel := e.op(ctx)
	defer cancel()
	return stream.OrderedConsumer(octx, cfg)
}

// tailStart is the sequence from which stream holds the last n lines of
// those cfg selects, or 0 when it selects no more than n. JetStream tells
// how many messages of a filter a consumer has pending from its start, but
// cannot start one n messages of a filter before the end: the start is
// bisected on that count, a consumer made and deleted at each step, about
// 2·log2(messages in the stream) requests. Lines stored meanwhile come on
// top of the n.
func (e *env) tailStart(ctx context.Context, stream jetstream.Stream, filter string, cfg jetstream.OrderedConsumerConfig, n uint64) (uint64, error) {
	from := func(c jetstream.ConsumerConfig) (uint64, error) {
		c.FilterSubject, c.AckPolicy, c.InactiveThreshold, c.MemoryStorage = filter, jetstream.AckNonePolicy, consumerIdle, true
		octx, cancel := e.op(ctx)
		defer cancel()
		cons, err := stream.CreateConsumer(octx, c)
		if err != nil {
			return 0, fmt.Errorf("count the lines of %s: %w", filter, err)
		}
		info := cons.CachedInfo()
		if err := stream.DeleteConsumer(octx, info.Name); err != nil {
			e.log.Debug("delete the consumer logs counted with", "err", err)
		}
		return info.NumPending, nil
	}
	all, err := from(jetstream.ConsumerConfig{DeliverPolicy: cfg.DeliverPolicy, OptStartTime: cfg.OptStartTime})
	if err != nil || all <= n {
		return 0, err
	}
	octx, cancel := e.op(ctx)
	info, err := stream.Info(octx)
	cancel()
	if err != nil {
		return 0, fmt.Errorf("read stream %s: %w", names.LogsStream, err)
	}
	// More than n from lo, no more than n from hi: the first sequence
	// with n is hi once they meet.
	lo, hi := info.State.FirstSeq, info.State.LastSeq+1
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		k, err := from(jetstream.ConsumerConfig{DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: mid})
		if err != nil {
			return 0, err
		}
		if k > n {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi, nil
}

func orStar(s string) string {
	if s == "" {
		return "*"
	}
	return s
}

func (e *env) printLog(msg jetstream.Msg, asJSON bool) error {
	var l state.LogLine
	if err := json.Unmarshal(msg.Data(), &l); err != nil || l.Time.IsZero() {
		// Not from a runner: show the raw line with what the subject says.
		parts := strings.Split(msg.Subject(), ".")
		l = state.LogLine{Line: string(msg.Data())}
		if len(parts) == 5 {
			l.App, l.Node, l.Instance = parts[2], parts[3], parts[4]
		}
		if meta, err := msg.Metadata(); err == nil {
			l.Time = meta.Timestamp
		}
	}
	if asJSON {
		// Every key in every line: a runner leaves partial out when false.
		// Encode writes what json.Marshal and a newline would, with one
		// error for both.
		return json.NewEncoder(e.stdio.Stdout).Encode(struct {
			state.LogLine
			Partial bool `json:"partial"`
		}{l, l.Partial})
	}
	// The runner's own lines are told apart in the field an app's output
	// cannot reach: a line an app prints may say anything.
	source := cli.Shown(l.Node) + "/" + cli.Shown(l.Instance)
	if l.Stream == state.Narun {
		source = "narun@" + source
	}
	_, err := fmt.Fprintf(e.stdio.Stdout, "%s %s %s\n", l.Time.Local().Format("2006-01-02T15:04:05.000"), source, cli.Shown(l.Line))
	return err
}
