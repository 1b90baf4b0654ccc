package connect

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols/tcp"
)

// Proxy forwards local connections to one service through the gateway.
type Proxy struct {
	Service     string
	Gateway     string // host:port
	PublicName  string // the gateway's public name (default localhost)
	IdentityDir string // svid.pem, svid_key.pem, svid_bundle.pem
	Logger      *slog.Logger
	// StartupTimeout bounds a Postgres client's opening messages and the
	// delivery of a cancel request; 10s when zero.
	StartupTimeout time.Duration

	mu      sync.Mutex
	modTime time.Time
	cert    *tls.Certificate
	roots   *x509.CertPool
}

// Check loads the identity files, so that a missing identity is reported
// before the first client connects.
func (p *Proxy) Check() error {
	_, _, err := p.identity()
	return err
}

// identity returns the SVID and roots, reloading the files when they
// changed on disk (an SVID renewed by another process is picked up).
func (p *Proxy) identity() (*tls.Certificate, *x509.CertPool, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	st, err := os.Stat(filepath.Join(p.IdentityDir, pki.SVIDFile))
	if err != nil {
		return nil, nil, fmt.Errorf("reading identity in %s: %w", p.IdentityDir, err)
	}
	if p.cert != nil && st.ModTime().Equal(p.modTime) {
		return p.cert, p.roots, nil
	}
	svid, roots, err := pki.ReadFiles(p.IdentityDir)
	if err != nil {
		return nil, nil, err
	}
	if time.Now().After(svid.Certificates[0].NotAfter) {
		return nil, nil, fmt.Errorf("SVID in %s expired at %s", p.IdentityDir, svid.Certificates[0].NotAfter.Format(time.RFC3339))
	}
	cert, err := pki.TLSCertificate(svid)
	if err != nil {
		return nil, nil, err
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	p.cert, p.roots, p.modTime = cert, pool, st.ModTime()
	return cert, pool, nil
}

// Serve accepts on ln until ctx is done.
func (p *Proxy) Serve(ctx context.Context, ln net.Listener) error {
	if p.Logger == nil {
		p.Logger = slog.Default()
	}
	if p.PublicName == "" {
		p.PublicName = "localhost"
	}
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			return fmt.Errorf("accepting: %w", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			p.forward(ctx, c)
		}()
	}
}

func (p *Proxy) forward(ctx context.Context, local net.Conn) {
	defer local.Close()
	remote, err := p.Dial(ctx)
	if err != nil {
		p.Logger.Warn("connecting to gateway", "service", p.Service, "err", err)
		return
	}
	if remote.ConnectionState().NegotiatedProtocol == alpnPostgres {
		p.forwardPostgres(ctx, local, remote)
		return
	}
	counts, err := (&tcp.Relay{}).Run(ctx, local, remote)
	p.Logger.Debug("connection closed", "service", p.Service, "bytes_in", counts.In, "bytes_out", counts.Out, "err", err)
}

// Dial opens one mTLS connection to the service at the gateway. The
// negotiated ALPN protocol tells the service's kind: "postgresql" for a
// Postgres service, which forward then serves as Postgres.
func (p *Proxy) Dial(ctx context.Context) (*tls.Conn, error) {
	cert, roots, err := p.identity()
	if err != nil {
		return nil, err
	}
	d := tls.Dialer{Config: &tls.Config{
		ServerName:   p.Service + "." + p.PublicName,
		RootCAs:      roots,
		Certificates: []tls.Certificate{*cert},
		MinVersion:   tls.VersionTLS12,
		// The gateway offers ALPN by the service's protocol. Go's server
		// (crypto/tls negotiateALPN) takes the first of its own protocols
		// that the client offers, ignores ALPN when it has none, and, as a
		// special case, lets a client offering "http/1.1" onto an "h2"-only
		// server with no protocol rather than failing. So:
		//   Postgres ["postgresql"]        → "postgresql": serve as Postgres
		//   HTTP     ["h2", "http/1.1"]    → "http/1.1": our local side is HTTP/1.1
		//   gRPC     ["h2"]                → "" (the fallback), as with no ALPN
		//   TCP      none                  → "": relay blindly
		// Without "http/1.1" here a gRPC service's handshake would fail
		// with "client requested unsupported application protocols".
		NextProtos: []string{alpnPostgres, "http/1.1"},
	}}
	c, err := d.DialContext(ctx, "tcp", p.Gateway)
	if err != nil {
		return nil, fmt.Errorf("dialing %s: %w", p.Gateway, err)
	}
	return c.(*tls.Conn), nil
}
