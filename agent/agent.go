package agent

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/rotate"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/login"
	"github.com/postern/postern/protocols/tunnel"
)

// Transports an agent can be told to use.
const (
	TransportAuto = "auto"
	TransportQUIC = tunnel.QUIC
	TransportTLS  = tunnel.TLS
)

// Service is one local service the agent serves.
type Service struct {
	Name     string
	Protocol string // tcp, postgres, http, grpc
	Address  string // host:port
	// Postgres holds how the agent logs in to a postgres service; nil: every
	// role logs in with no secret, without TLS.
	Postgres *PostgresOptions
	// TLS, for http and grpc services, makes the agent speak TLS to the
	// upstream; nil: plaintext (HTTP/1.1, or h2c for gRPC).
	TLS *UpstreamTLS
}

// UpstreamTLS is how the agent reaches an HTTP or gRPC upstream over TLS.
type UpstreamTLS struct {
	RootCAs    *x509.CertPool // nil: the system roots
	ServerName string         // default: the address's host
}

// PostgresOptions says how the agent logs in to a Postgres service.
type PostgresOptions struct {
	// Roles holds the secret of each database role; a role without an
	// entry logs in with no secret (trust or peer setups).
	Roles      map[string]login.Credential
	TLS        string         // disable (default), require or verify-full
	RootCAs    *x509.CertPool // verify-full
	ServerName string         // verify-full; default the address's host
	// CaptureRows is announced to the gateway (tunnel.Service.CaptureRows),
	// which records that many result rows of each query.
	CaptureRows int
}

// loginConfig is how servePostgres reaches the service.
func (s Service) loginConfig(dialTimeout time.Duration) login.Config {
	c := login.Config{Address: s.Address, DialTimeout: dialTimeout}
	if o := s.Postgres; o != nil {
		c.Roles, c.TLS, c.RootCAs, c.ServerName = o.Roles, o.TLS, o.RootCAs, o.ServerName
	}
	return c
}

// Config configures an Agent.
type Config struct {
	Gateway   string // host:port of the gateway (TCP and UDP)
	Name      string
	Token     string // join token; needed only when no valid SVID is in DataDir
	DataDir   string
	Transport string // auto (default), quic or tls
	Services  []Service

	// Heartbeat is the interval of pings on the control stream (5s).
	Heartbeat time.Duration
	// QUICTimeout is how long auto waits for QUIC before it falls back to
	// TLS (3s).
	QUICTimeout time.Duration
	// MinBackoff and MaxBackoff bound the reconnect delay (500ms, 30s).
	MinBackoff, MaxBackoff time.Duration
	// DialTimeout bounds the dial of a local service (5s).
	DialTimeout time.Duration
	// DrainTimeout bounds how long a stopping agent waits for its open
	// streams to end once the gateway routes no new ones to it (10s);
	// negative: it leaves at once.
	DrainTimeout time.Duration

	Tunnel *tunnel.Config
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = "./postern-agent"
	}
	if c.Transport == "" {
		c.Transport = TransportAuto
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.QUICTimeout <= 0 {
		c.QUICTimeout = 3 * time.Second
	}
	if c.MinBackoff <= 0 {
		c.MinBackoff = 500 * time.Millisecond
	}
	if c.MaxBackoff <= 0 {
		c.MaxBackoff = 30 * time.Second
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 5 * time.Second
	}
	if c.DrainTimeout == 0 {
		c.DrainTimeout = 10 * time.Second
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Validate checks the configuration.
func (c Config) Validate() error {
	if c.Gateway == "" {
		return errors.New("no gateway address")
	}
	if _, _, err := net.SplitHostPort(c.Gateway); err != nil {
		return fmt.Errorf("checking gateway address %q: %w", c.Gateway, err)
	}
	if c.Name == "" {
		return errors.New("no agent name")
	}
	switch c.Transport {
	case "", TransportAuto, TransportQUIC, TransportTLS:
	default:
		return fmt.Errorf("unknown transport %q (want auto, quic or tls)", c.Transport)
	}
	seen := map[string]bool{}
	for _, s := range c.Services {
		if s.Name == "" {
			return errors.New("a service has no name")
		}
		if seen[s.Name] {
			return fmt.Errorf("service %q is listed twice", s.Name)
		}
		seen[s.Name] = true
		if !protocols.ValidProtocol(s.Protocol) {
			return fmt.Errorf("service %q: unknown protocol %q (want tcp, postgres, http or grpc)", s.Name, s.Protocol)
		}
		if _, _, err := net.SplitHostPort(s.Address); err != nil {
			return fmt.Errorf("service %q: address %q: %w", s.Name, s.Address, err)
		}
		if s.TLS != nil && s.Protocol != protocols.HTTP && s.Protocol != protocols.GRPC {
			return fmt.Errorf("service %q: upstream tls is for http and grpc services, not %s", s.Name, s.Protocol)
		}
		if s.Postgres == nil {
			continue
		}
		if s.Protocol != protocols.Postgres {
			return fmt.Errorf("service %q: postgres options on a %s service", s.Name, s.Protocol)
		}
		if err := s.loginConfig(0).Validate(); err != nil {
			return fmt.Errorf("service %q: %w", s.Name, err)
		}
		if s.Postgres.CaptureRows < 0 {
			return fmt.Errorf("service %q: capture rows %d is negative", s.Name, s.Postgres.CaptureRows)
		}
	}
	return nil
}

// Agent is a running agent.
type Agent struct {
	cfg      Config
	log      *slog.Logger
	services map[string]Service
	source   *rotate.Source
	bundle   *x509bundle.Bundle
	id       spiffeid.ID
	// connected reports each tunnel that comes up (for tests and status).
	connected chan string
}

// New checks the configuration and loads the agent's SVID from its data
// directory, enrolling with the join token when there is no valid SVID.
func New(ctx context.Context, cfg Config) (*Agent, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	cfg = cfg.withDefaults()
	a := &Agent{cfg: cfg, log: cfg.Logger.With("agent", cfg.Name), services: map[string]Service{},
		connected: make(chan string, 16)}
	for _, s := range cfg.Services {
		a.services[s.Name] = s
		if o := s.Postgres; o != nil && (o.TLS == "" || o.TLS == login.TLSDisable) {
			for role, cred := range o.Roles {
				if cred.Certificate != nil {
					a.log.Warn("a role has a client certificate but TLS to the server is disabled: the certificate is not sent",
						"service", s.Name, "role", role)
				}
			}
		}
	}
	svid, roots, err := a.loadOrEnroll(ctx)
	if err != nil {
		return nil, err
	}
	a.id = svid.ID
	a.bundle = x509bundle.FromX509Authorities(svid.ID.TrustDomain(), roots)
	a.source = rotate.New(svid, a.renew, rotate.Options{Logger: a.log, OnRotate: a.persist})
	return a, nil
}

// ID returns the agent's SPIFFE ID.
func (a *Agent) ID() spiffeid.ID { return a.id }

// Connected reports the transport of each tunnel that comes up.
func (a *Agent) Connected() <-chan string { return a.connected }

// loadOrEnroll uses the SVID in the data directory while it is valid (a join
// token, used or not, is then ignored) and enrolls otherwise.
func (a *Agent) loadOrEnroll(ctx context.Context) (*x509svid.SVID, []*x509.Certificate, error) {
	svid, roots, err := pki.ReadFiles(a.cfg.DataDir)
	switch {
	case err == nil && time.Now().Before(svid.Certificates[0].NotAfter):
		if want := "/agent/" + a.cfg.Name; svid.ID.Path() != want {
			return nil, nil, fmt.Errorf("checking SVID in %s: it is for %s, not agent %q", a.cfg.DataDir, svid.ID, a.cfg.Name)
		}
		a.log.Info("using stored SVID", "id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
		return svid, roots, nil
	case err == nil:
		a.log.Warn("stored SVID has expired; enrolling again", "not_after", svid.Certificates[0].NotAfter)
	case !errors.Is(err, os.ErrNotExist):
		return nil, nil, fmt.Errorf("reading SVID from %s: %w", a.cfg.DataDir, err)
	}
	if a.cfg.Token == "" {
		return nil, nil, fmt.Errorf("enrolling: no valid SVID in %s and no join token (create one with: postern token create --name %s)", a.cfg.DataDir, a.cfg.Name)
	}
	svid, roots, err = a.enroll(ctx)
	if err != nil {
		return nil, nil, err
	}
	if err := pki.WriteFiles(a.cfg.DataDir, svid, roots); err != nil {
		return nil, nil, fmt.Errorf("saving SVID: %w", err)
	}
	a.log.Info("enrolled", "id", svid.ID.String(), "not_after", svid.Certificates[0].NotAfter)
	return svid, roots, nil
}

func (a *Agent) persist(svid *x509svid.SVID) {
	if err := pki.WriteFiles(a.cfg.DataDir, svid, a.bundle.X509Authorities()); err != nil {
		a.log.Error("saving renewed SVID", "err", err)
		return
	}
	a.log.Info("SVID renewed", "not_after", svid.Certificates[0].NotAfter)
}

// Run keeps a tunnel to the gateway up and serves streams until ctx is done.
func (a *Agent) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	rotated := make(chan error, 1)
	go func() {
		err := a.source.Run(ctx)
		if err != nil {
			// Renewal kept failing until the SVID expired: the gateway will
			// refuse the tunnel until the agent enrolls again.
			a.log.Error("SVID rotation stopped; enroll again with a new join token", "err", err)
		}
		rotated <- err
	}()

	backoff := a.cfg.MinBackoff
	for ctx.Err() == nil {
		sess, err := a.dial(ctx)
		if err != nil {
			if ctx.Err() != nil {
				break
			}
			wait := backoff/2 + rand.N(backoff/2+1)
			a.log.Warn("connecting to gateway", "gateway", a.cfg.Gateway, "err", err, "retry_in", wait.Round(time.Millisecond).String())
			select {
			case <-time.After(wait):
			case <-ctx.Done():
			}
			backoff = min(2*backoff, a.cfg.MaxBackoff)
			continue
		}
		backoff = a.cfg.MinBackoff
		a.serve(ctx, sess)
	}
	cancel()
	<-rotated
	return nil
}
