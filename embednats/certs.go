package embednats

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"sync/atomic"
	"syscall"
	"time"
)

// certLookInterval is how often a running server looks at its certificate
// files: a read of a few small files, as the gateway does for its own.
var certLookInterval = time.Second

// certKeeper keeps the certificates of a server's TLS tables as their
// files are: a device whose certificates are renewed for days or hours
// (an ACME or step-ca client rewriting them in place) must not need a
// restart, which would drop its routes and clients, for each renewal. A
// new pair is used for the connections made after it is read; those open
// keep theirs. CA files are kept alike, so that a CA can be rotated
// (the new one added beside the old, certificates renewed, the old one
// removed) one file write at a time, without a restart on every device
// for each step.
type certKeeper struct {
	pairs map[[2]string]*keptPair // by certificate and key file
	// cas are the CA files by path. A restart of the server (after a
	// full disk) reads no file again, so a renewal caught half-written
	// cannot fail it.
	cas map[string]*keptCA
	// reload gives the running server the CAs as now kept: nats-server
	// checks peers against the pools in its options, which only a reload
	// of its options replaces.
	reload func() error
	stop   context.CancelFunc
	done   chan struct{}
}

// keptCA is one CA file and the certificates last taken from it.
type keptCA struct {
	file    string
	current atomic.Pointer[x509.CertPool]
	// seen identifies the file's content in use; failed the content last
	// refused, so that a broken file is said once, not every second.
	seen, failed [sha256.Size]byte
}

// pool reads a CA file, once for every table that names it.
func (k *certKeeper) pool(file string) (*x509.CertPool, error) {
	ca, err := k.ca(file)
	if err != nil {
		return nil, err
	}
	return ca.current.Load(), nil
}

func (k *certKeeper) ca(file string) (*keptCA, error) {
	if ca := k.cas[file]; ca != nil {
		return ca, nil
	}
	ca := &keptCA{file: file}
	pool, version, err := ca.read()
	if err != nil {
		return nil, err
	}
	ca.current.Store(pool)
	ca.seen = version
	if k.cas == nil {
		k.cas = map[string]*keptCA{}
	}
	k.cas[file] = ca
	return ca, nil
}

// read reads the CA file; version identifies what it found, a failure to
// read included.
func (ca *keptCA) read() (*x509.CertPool, [sha256.Size]byte, error) {
	pem, err := readRegular(ca.file)
	if err != nil {
		return nil, sha256.Sum256([]byte(err.Error())), err
	}
	version := sha256.Sum256(pem)
	p := x509.NewCertPool()
	if !p.AppendCertsFromPEM(pem) {
		return nil, version, fmt.Errorf("%s holds no PEM certificate", ca.file)
	}
	return p, version, nil
}

// maxCertFile bounds what is read of a certificate, key or CA file.
const maxCertFile = 1 << 20

// readRegular reads a regular file: a FIFO or device put at the path
// would block the read, and with it the server's shutdown.
func readRegular(file string) ([]byte, error) {
	f, err := os.OpenFile(file, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	if fi, err := f.Stat(); err != nil {
		return nil, err
	} else if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", file)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxCertFile+1))
	if err == nil && len(b) > maxCertFile {
		err = fmt.Errorf("%s is larger than %d bytes", file, maxCertFile)
	}
	return b, err
}

// keptPair is one certificate and key file pair and what was last read
// of them.
type keptPair struct {
	cert, key string
	current   atomic.Pointer[tls.Certificate]
	// needs are the extended key usages the tables using the pair need
	// of it: a renewed pair without one of them is refused as well.
	needs []x509.ExtKeyUsage
	// roots are CAs the pair must chain to: a route's, which the other
	// members check it against.
	roots []*keptCA
	// seen identifies the files' content in use; failed the content last
	// refused, so that a broken pair is said once, not every second.
	seen, failed [sha256.Size]byte
}

// pair loads the pair of files, once for every table that names it.
func (k *certKeeper) pair(cert, key string) (*keptPair, error) {
	id := [2]string{cert, key}
	if p := k.pairs[id]; p != nil {
		return p, nil
	}
	p := &keptPair{cert: cert, key: key}
	certPEM, keyPEM, version, err := p.read()
	if err == nil {
		err = p.load(certPEM, keyPEM, version, false)
	}
	if err != nil {
		return nil, err
	}
	if k.pairs == nil {
		k.pairs = map[[2]string]*keptPair{}
	}
	k.pairs[id] = p
	return p, nil
}

// read reads the pair's files; version identifies what it found, a
// failure to read included.
func (p *keptPair) read() (certPEM, keyPEM []byte, version [sha256.Size]byte, err error) {
	if certPEM, err = readRegular(p.cert); err == nil {
		keyPEM, err = readRegular(p.key)
	}
	if err != nil {
		return nil, nil, sha256.Sum256([]byte(err.Error())), err
	}
	h := sha256.New()
	h.Write(certPEM)
	h.Write(keyPEM)
	h.Sum(version[:0])
	return certPEM, keyPEM, version, nil
}

// load takes a pair read from the files. A renewal must not be expired;
// at start an expired pair is taken all the same (start says so): a leaf
// device kept off longer than its certificates live must still serve its
// own apps, and take the renewed pair when it comes.
func (p *keptPair) load(certPEM, keyPEM []byte, version [sha256.Size]byte, renewal bool) error {
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if err := usableFor(pair.Leaf, p.needs); err != nil {
		return err
	}
	if err := chains(&pair, rootPools(p.roots, nil, nil)); err != nil {
		return err
	}
	// An expired pair fails every peer: a renewal that wrote a stale one
	// (a backup put back) must not replace the one that works. Judged by
	// the end date only: a device whose clock is behind (no RTC, before
	// NTP) finds every fresh certificate not yet valid.
	if err := expired(pair.Leaf); renewal && err != nil {
		return err
	}
	p.current.Store(&pair)
	p.seen, p.failed = version, [sha256.Size]byte{}
	return nil
}

// expired says when leaf ended, if it has by this device's clock.
func expired(leaf *x509.Certificate) error {
	if now := time.Now(); now.After(leaf.NotAfter) {
		return fmt.Errorf("expired on %s (by this device's clock, %s)", leaf.NotAfter.UTC().Format(time.RFC3339), now.UTC().Format(time.RFC3339))
	}
	return nil
}

// chainTo adds ca to the CAs the pair must chain to, and checks the pair
// in use against it.
func (p *keptPair) chainTo(ca *keptCA) error {
	if !slices.Contains(p.roots, ca) {
		p.roots = append(p.roots, ca)
	}
	return chains(p.current.Load(), rootPools(p.roots, nil, nil))
}

// rootPools are the pools of roots as kept, but with candidate for ca.
func rootPools(roots []*keptCA, ca *keptCA, candidate *x509.CertPool) []*x509.CertPool {
	pools := make([]*x509.CertPool, 0, len(roots))
	for _, r := range roots {
		if r == ca {
			pools = append(pools, candidate)
		} else {
			pools = append(pools, r.current.Load())
		}
	}
	return pools
}

// chains checks that pair's certificate chains to each of roots. A route
// certificate of another CA (two files swapped) would fail every route's
// handshake after a start that found nothing wrong. Checked now, as peers
// check it; a chain refused only for its dates is taken (the expiry is
// judged apart, and a device clock that is behind must not refuse a good
// certificate).
func chains(pair *tls.Certificate, roots []*x509.CertPool) error {
	leaf := pair.Leaf
	inter := x509.NewCertPool()
	for _, der := range pair.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			inter.AddCert(c)
		}
	}
	for _, pool := range roots {
		_, err := leaf.Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})
		var dates x509.CertificateInvalidError
		if err != nil && !(errors.As(err, &dates) && dates.Reason == x509.Expired) {
			return fmt.Errorf("not signed by the CA it must be: %w", err)
		}
	}
	return nil
}

// require adds usages to what the pair must allow, and checks the pair in
// use against them.
func (p *keptPair) require(usages ...x509.ExtKeyUsage) error {
	for _, u := range usages {
		if !slices.Contains(p.needs, u) {
			p.needs = append(p.needs, u)
		}
	}
	return usableFor(p.current.Load().Leaf, p.needs)
}

// usableFor says whether a certificate may be used as needs say. Go
// checks the peer's certificate for it at each handshake, so one issued
// for servers only (as many CAs issue them) fails every route it dials,
// while the start found nothing wrong.
func usableFor(leaf *x509.Certificate, needs []x509.ExtKeyUsage) error {
	if len(leaf.ExtKeyUsage) == 0 || slices.Contains(leaf.ExtKeyUsage, x509.ExtKeyUsageAny) {
		return nil
	}
	for _, u := range needs {
		if !slices.Contains(leaf.ExtKeyUsage, u) {
			return fmt.Errorf("its extended key usage lacks %s", usageName(u))
		}
	}
	return nil
}

func usageName(u x509.ExtKeyUsage) string {
	switch u {
	case x509.ExtKeyUsageServerAuth:
		return "serverAuth"
	case x509.ExtKeyUsageClientAuth:
		return "clientAuth"
	}
	return fmt.Sprint(int(u))
}

// use makes cfg present the pair's current certificate, as a server and
// as a client (a route or a remote dials too).
func (p *keptPair) use(cfg *tls.Config) {
	cfg.GetCertificate = func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return p.current.Load(), nil }
	cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return p.current.Load(), nil }
}

// look reads the files again and takes a pair that changed. A pair that
// does not load (a renewal that has written the certificate but not yet
// its key) leaves the one in use in place until it does.
func (p *keptPair) look(log *slog.Logger) {
	certPEM, keyPEM, version, err := p.read()
	if err == nil && version == p.seen {
		// Back to the pair in use: a failure seen again is new news.
		p.failed = [sha256.Size]byte{}
		return
	}
	if err == nil {
		if err = p.load(certPEM, keyPEM, version, true); err == nil {
			log.Info("NATS certificate reloaded", "cert", p.cert, "expires", p.current.Load().Leaf.NotAfter)
			return
		}
	}
	if version == p.failed {
		return
	}
	p.failed = version
	log.Warn("NATS certificate not reloaded: the one in use stays until the files load", "cert", p.cert, "key", p.key, "err", err)
}

// look reads the CA file again and takes a changed one that reads,
// unless a route certificate in use would no longer chain to it: the
// other members would refuse it at the next handshake, and the cluster
// would fall apart one route at a time. It says whether it took one.
func (k *certKeeper) look(ca *keptCA, log *slog.Logger) bool {
	pool, version, err := ca.read()
	if err == nil && version == ca.seen {
		ca.failed = [sha256.Size]byte{}
		return false
	}
	if err == nil {
		for _, p := range k.pairs {
			if !slices.Contains(p.roots, ca) {
				continue
			}
			if cerr := chains(p.current.Load(), rootPools(p.roots, ca, pool)); cerr != nil {
				err = fmt.Errorf("the route certificate in use, %s, is %w: add the new CA beside the old one, renew the route certificates, then remove the old CA", p.cert, cerr)
				break
			}
		}
	}
	if err == nil {
		ca.current.Store(pool)
		ca.seen, ca.failed = version, [sha256.Size]byte{}
		return true
	}
	if version == ca.failed {
		return false
	}
	ca.failed = version
	log.Warn("NATS CA file not reloaded: the CAs in use stay until it loads", "ca", ca.file, "err", err)
	return false
}

// start looks at the files every certLookInterval until stopped.
func (k *certKeeper) start(log *slog.Logger) {
	if len(k.pairs) == 0 && len(k.cas) == 0 {
		return
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	for _, p := range k.pairs {
		if err := expired(p.current.Load().Leaf); err != nil {
			log.Warn("NATS certificate "+p.cert+" "+err.Error()+": peers refuse it until it is renewed, which is taken without a restart", "cert", p.cert)
		}
	}
	ctx, stop := context.WithCancel(context.Background())
	k.stop, k.done = stop, make(chan struct{})
	go func() {
		defer close(k.done)
		t := time.NewTicker(certLookInterval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			// CAs first: a route certificate renewed from a CA just
			// added to the file chains only to the new pool.
			var changed []string
			for _, ca := range k.cas {
				if k.look(ca, log) {
					changed = append(changed, ca.file)
				}
			}
			if len(changed) > 0 && k.reload != nil {
				if err := k.reload(); err != nil {
					log.Error("NATS CA files read, but not applied: connections are checked against the CAs read before until a restart", "ca", changed, "err", err)
				} else {
					log.Info("NATS CA files reloaded: new connections are checked against them", "ca", changed)
				}
			}
			for _, p := range k.pairs {
				p.look(log)
			}
		}
	}()
}

// close stops the looks and waits for the last one to end.
func (k *certKeeper) close() {
	if k.stop != nil {
		k.stop()
		<-k.done
	}
}
