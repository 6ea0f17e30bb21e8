package embednats

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
)

// TLS is the certificate a port presents and the authority it trusts for
// the other side's; files are PEM. The zero value means no TLS.
type TLS struct {
	Cert string // certificate (chain) presented to the other side
	Key  string // its private key
	// CA signs the other side's certificate: the clients' when Verify is
	// set, the peers' on routes, the hub's for a remote (empty there means
	// the system's authorities).
	CA string
	// Verify requires clients to present a certificate CA signed. Routes
	// always require one, and a remote has no clients to ask.
	Verify bool
}

func (t TLS) set() bool { return t != TLS{} }

// tlsUse is who a TLS table is for: what it requires differs.
type tlsUse int

const (
	// tlsListener accepts clients or leaf nodes: its own certificate is
	// required, the clients' only with Verify.
	tlsListener tlsUse = iota
	// tlsRoute both accepts and dials cluster members, who must each
	// prove membership with a certificate of the cluster's CA: an
	// unchecked route would read and publish every subject.
	tlsRoute
	// tlsRemote dials a hub: it checks the hub's certificate, and may
	// present its own.
	tlsRemote
)

// CheckCA reads a file of CA certificates as a NATS client does: for a
// setting a client or an app is given, checked before it is used.
func CheckCA(file string) error {
	_, err := (&certKeeper{}).pool(file)
	return err
}

// CheckClientCert loads a NATS client's certificate and key, and checks
// that the certificate may serve a client: a server refuses one issued
// for servers only, saying no more than "bad certificate".
func CheckClientCert(cert, key string) error {
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		return fmt.Errorf("%s with key %s: %w", cert, key, err)
	}
	if err := usableFor(pair.Leaf, tlsRemote.usages()); err != nil {
		return fmt.Errorf("%s: %w, which a client certificate needs", cert, err)
	}
	return nil
}

// usages are what a certificate presented for use must allow.
func (use tlsUse) usages() []x509.ExtKeyUsage {
	switch use {
	case tlsRoute:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	case tlsRemote:
		return []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
}

// config builds the tls.Config of key ("nats.cluster.tls"), reading its
// files now so that a missing or wrong one fails the start, named by its
// key, rather than each connection later; certs keeps its certificate
// current.
func (t TLS) config(key string, use tlsUse, certs *certKeeper) (*tls.Config, error) {
	bad := func(sub string, err error) error {
		if sub != "" {
			key += "." + sub
		}
		return &KeyError{Key: key, Err: err}
	}
	switch {
	case t.Cert == "" && t.Key != "":
		return nil, bad("key", errors.New("set, but cert is empty: set both, the certificate and its private key"))
	case t.Cert != "" && t.Key == "":
		return nil, bad("cert", errors.New("set, but key is empty: set both, the certificate and its private key"))
	case t.Cert == "" && use != tlsRemote:
		return nil, bad("", errors.New("cert and key are empty: this port's TLS needs its certificate and private key"))
	case t.CA == "" && use == tlsRoute:
		return nil, bad("", errors.New("ca is empty: routes present and check certificates both ways, so name the CA that signs the members' certificates"))
	case t.CA == "" && t.Verify:
		return nil, bad("verify", errors.New("set, but ca is empty: name the CA that signs the clients' certificates"))
	case t.Verify && use != tlsListener:
		return nil, bad("verify", errors.New("not for this table: routes always check the other side's certificate, and a remote always checks its hub's"))
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	var pair *keptPair
	if t.Cert != "" {
		var err error
		pair, err = certs.pair(t.Cert, t.Key)
		if err != nil {
			return nil, bad("cert", fmt.Errorf("load %s with key %s: %w", t.Cert, t.Key, err))
		}
		if err := pair.require(use.usages()...); err != nil {
			return nil, bad("cert", fmt.Errorf("%s: %w, which this table needs: routes present their certificates as servers and as clients, leaf remotes as clients; issue it with serverAuth and clientAuth", t.Cert, err))
		}
		pair.use(cfg)
	}
	if t.CA != "" {
		ca, err := certs.ca(t.CA)
		if err != nil {
			return nil, bad("ca", err)
		}
		pool := ca.current.Load()
		if use == tlsRoute {
			if err := pair.chainTo(ca); err != nil {
				return nil, bad("cert", fmt.Errorf("%s: %w; the members check each other's route certificates against ca, %s", t.Cert, err, t.CA))
			}
		}
		// A route both accepts and dials, so checks with the one pool
		// either way; a remote only dials, a listener only accepts.
		switch use {
		case tlsRoute:
			cfg.RootCAs, cfg.ClientCAs = pool, pool
		case tlsRemote:
			cfg.RootCAs = pool
		case tlsListener:
			cfg.ClientCAs = pool
		}
	}
	if t.Verify || use == tlsRoute {
		cfg.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}
