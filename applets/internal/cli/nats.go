package cli

import (
	"errors"
	"fmt"
	"net"
	"time"

	ucli "github.com/urfave/cli/v2"

	"github.com/narun/narun/applets/internal/config"
	"github.com/narun/narun/applets/internal/names"
	"github.com/narun/narun/applets/internal/sdnotify"
	"github.com/narun/narun/embednats"
)

// EmbedConfig turns the [nats] table into the embedded server's config.
func EmbedConfig(cfg config.File) embednats.Config {
	n := cfg.NATS
	ec := embednats.Config{
		Listen:                n.Listen,
		DataDir:               cfg.DataDir,
		ServerName:            n.ServerName,
		MaxPayload:            int64(n.MaxPayload),
		HTTPListen:            n.HTTPListen,
		JetStreamMaxMemory:    int64(n.JetStream.MaxMemory),
		JetStreamMaxStore:     int64(n.JetStream.MaxStore),
		JetStreamDomain:       n.JetStream.Domain,
		JetStreamSyncInterval: n.JetStream.SyncInterval.D(),
		TLS:                   embednats.TLS(n.TLS),
		Cluster: embednats.Cluster{Name: n.Cluster.Name, Listen: n.Cluster.Listen, Routes: n.Cluster.Routes,
			User: n.Cluster.User, Password: n.Cluster.Password, TLS: peerTLS(n.Cluster.TLS)},
		Leafnodes: embednats.Leafnodes{Listen: n.Leafnodes.Listen, Local: names.LeafLocal, TLS: embednats.TLS(n.Leafnodes.TLS)},
		// A big store read after a power cut can outlast a service
		// manager's start timeout (90 s by default): it would kill the
		// start, and the next one would read the store again.
		Reading: func() { _ = sdnotify.Send(sdnotify.Extend(30 * time.Second)) },
	}
	for _, r := range n.Leafnodes.Remotes {
		ec.Leafnodes.Remotes = append(ec.Leafnodes.Remotes, embednats.LeafRemote{URLs: r.URLs, Credentials: r.Credentials, TLS: peerTLS(r.TLS)})
	}
	app := &embednats.Permissions{DenyPublish: names.AppDenyPublish()}
	for _, u := range n.Users {
		var perms *embednats.Permissions
		if u.Role == config.RoleApp {
			perms = app
		}
		ec.Users = append(ec.Users, embednats.User{User: u.User, Password: u.Password, Permissions: perms})
	}
	for _, k := range n.NKeys {
		ec.NKeys = append(ec.NKeys, embednats.NKey{PublicKey: string(k)})
	}
	for _, k := range n.AppNKeys {
		ec.NKeys = append(ec.NKeys, embednats.NKey{PublicKey: string(k), Permissions: app, Key: "nats.app_nkeys"})
	}
	return ec
}

func peerTLS(t config.PeerTLS) embednats.TLS {
	return embednats.TLS{Cert: t.Cert, Key: t.Key, CA: t.CA}
}

// PlaceNATSError names the file and line of the [nats] key behind an error
// of the embedded server's configuration (embednats.KeyError), as the
// decoder names a wrong type, and of each of the errors joined in it, as
// embednats.Check names every problem. flags maps each key a flag of the
// command line set, which the file does not hold, to that flag
// (GivenFlags): its error names the flag and is a usage error, as a wrong
// flag is elsewhere, unless the server could not listen (a port another
// process holds), which the same command line may do another time.
func PlaceNATSError(cfg config.File, err error, flags map[string]string) error {
	if parts := config.Joined(err); parts != nil {
		placed := make([]error, len(parts))
		for i, part := range parts {
			placed[i] = PlaceNATSError(cfg, part, flags)
		}
		return errors.Join(placed...)
	}
	var ke *embednats.KeyError
	if !errors.As(err, &ke) {
		return err
	}
	if flag := flags[ke.Key]; flag != "" {
		named := fmt.Errorf("--%s: %w", flag, config.PortNeedsRoot(ke.Key, ke.Err))
		var listen *net.OpError
		if errors.As(ke.Err, &listen) {
			return named
		}
		return Usage(named)
	}
	where := cfg.Where(ke.Key)
	if where == "" || where == cfg.Path {
		return config.PortNeedsRoot(ke.Key, err)
	}
	return fmt.Errorf("%s: key %q: %w", where, ke.Key, config.PortNeedsRoot(ke.Key, ke.Err))
}

// GivenFlags is the part of keys (a configuration key to the flag that
// may set it) whose flag the command line gives, for PlaceNATSError.
func GivenFlags(c *ucli.Context, keys map[string]string) map[string]string {
	given := map[string]string{}
	for key, flag := range keys {
		if c.IsSet(flag) {
			given[key] = flag
		}
	}
	return given
}
