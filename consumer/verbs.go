package consumer

import (
	"encoding/json"
	"fmt"
	"maps"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/micro"
)

// addVerbs answers the NATS Micro discovery subjects ($SRV.PING, INFO,
// STATS) itself rather than through micro.AddService: micro counts a request
// when its handler callback returns, and that callback runs serially, so a
// concurrent pool behind it would report requests as done when they start
// and never count their errors. The JSON is micro's own types.
func (s *server) addVerbs() ([]*nats.Subscription, error) {
	var subs []*nats.Subscription
	for _, v := range []struct {
		verb micro.Verb
		body func() any
	}{
		{micro.PingVerb, func() any { return micro.Ping{ServiceIdentity: s.identity(), Type: micro.PingResponseType} }},
		{micro.InfoVerb, func() any { return s.info() }},
		{micro.StatsVerb, func() any { return s.statsSnapshot() }},
	} {
		for _, name := range [][2]string{{"", ""}, {s.cfg.Name, ""}, {s.cfg.Name, s.id}} {
			subj, err := micro.ControlSubject(v.verb, name[0], name[1])
			if err != nil {
				return subs, fmt.Errorf("micro subject: %w", err)
			}
			body := v.body
			sub, err := s.nc.Subscribe(subj, func(m *nats.Msg) {
				data, err := json.Marshal(body())
				if err == nil {
					err = m.Respond(data)
				}
				if err != nil {
					s.asyncErr(fmt.Errorf("answer %s: %w", m.Subject, err))
				}
			})
			if err != nil {
				return subs, fmt.Errorf("subscribe to %s: %w", subj, err)
			}
			subs = append(subs, sub)
		}
	}
	return subs, nil
}

func (s *server) identity() micro.ServiceIdentity {
	md := maps.Clone(s.cfg.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	return micro.ServiceIdentity{Name: s.cfg.Name, ID: s.id, Version: s.cfg.Version, Metadata: md}
}

func (s *server) info() micro.Info {
	return micro.Info{
		ServiceIdentity: s.identity(),
		Type:            micro.InfoResponseType,
		Description:     s.cfg.Description,
		Endpoints: []micro.EndpointInfo{{
			Name: endpointName, Subject: s.cfg.Subject, QueueGroup: s.cfg.QueueGroup,
			Metadata: map[string]string{"protocol": "narun-http/1"},
		}},
	}
}

func (s *server) statsSnapshot() micro.Stats {
	s.mu.Lock()
	es := s.stats
	s.mu.Unlock()
	return micro.Stats{
		ServiceIdentity: s.identity(),
		Type:            micro.StatsResponseType,
		Started:         s.started,
		Endpoints:       []*micro.EndpointStats{&es},
	}
}
