package gateway

import (
	"context"
	"crypto"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"gocloud.dev/blob"

	"github.com/postern/postern/gateway/assertion"
	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/gateway/bearer"
	"github.com/postern/postern/gateway/policy"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/rotate"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres"
	pgclassify "github.com/postern/postern/protocols/postgres/classify"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/quic"
)

// Config configures a Server. Zero values take the defaults of SPEC §2.
type Config struct {
	DataDir     string
	Listen      string // TCP and UDP, default 127.0.0.1:8443
	OpsListen   string // plain HTTP for /metrics /healthz /readyz, default 127.0.0.1:8081; "-" disables
	TrustDomain spiffeid.TrustDomain
	PublicName  string // default localhost
	Name        string // gateway name in its SPIFFE ID, default "gateway"
	PolicyPath  string // policy file, watched and reloaded; empty denies everything

	// DisableQUIC turns the UDP listener off (for networks where agents
	// cannot use UDP, and for tests of the TLS fallback).
	DisableQUIC bool
	// HandshakeTimeout bounds the time from accept to a finished TLS
	// handshake; default 10s.
	HandshakeTimeout time.Duration
	// SVIDTTL is the gateway's own certificate lifetime (renewed at
	// half-life); AgentTTL the lifetime of SVIDs issued to agents. Both 1h
	// by default.
	SVIDTTL  time.Duration
	AgentTTL time.Duration
	// Heartbeat is how often agents are expected to speak on their control
	// stream; an agent silent for three heartbeats is not picked first.
	Heartbeat time.Duration
	// StatementCache is how many Postgres statement classifications are
	// kept (by statement text), default 10000.
	StatementCache int

	// OIDC are the issuers whose JWTs HTTP and gRPC clients may present as
	// bearer tokens instead of an SVID (docs/AUTH.md). API keys issued by
	// postern apikey create are always accepted.
	OIDC []bearer.IssuerConfig
	// Bearer tunes how OIDC issuers are reached (HTTP client, refresh).
	Bearer bearer.Options

	// Audit tunes recording (docs/AUDIT.md): the bound on buffered
	// records and whether a session whose events cannot be recorded is
	// closed (the default) or let run. Key, Logger, OnFail and Index are
	// set by the gateway.
	Audit audit.Options
	// RecordingsURL, if set, is a blob store (gocloud.dev/blob URL) that
	// every sealed recording is copied to (docs/AUDIT.md).
	RecordingsURL string
	// Recorder, when set, receives the events instead of the recordings.
	// Only benchmarks set it, to measure what recording costs against a
	// recorder that discards; it has no flag or config key.
	Recorder protocols.Recorder

	Tunnel *tunnel.Config
	Logger *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = "./postern-data"
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:8443"
	}
	if c.OpsListen == "" {
		c.OpsListen = "127.0.0.1:8081"
	}
	if c.TrustDomain.IsZero() {
		c.TrustDomain = spiffeid.RequireTrustDomainFromString("postern.local")
	}
	if c.PublicName == "" {
		c.PublicName = "localhost"
	}
	if c.Name == "" {
		c.Name = "gateway"
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.SVIDTTL <= 0 {
		c.SVIDTTL = time.Hour
	}
	if c.AgentTTL <= 0 {
		c.AgentTTL = time.Hour
	}
	if c.Heartbeat <= 0 {
		c.Heartbeat = 5 * time.Second
	}
	if c.StatementCache <= 0 {
		c.StatementCache = 10000
	}
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	return c
}

// Server is a running gateway.
type Server struct {
	cfg      Config
	log      *slog.Logger
	data     *DataDir
	policy   *policy.Engine
	recorder protocols.Recorder
	audit    *audit.Log
	svid     *rotate.Source
	id       spiffeid.ID
	reg      *registry
	metrics  *metrics
	pgKeys   *postgres.Keys
	pgClass  *pgclassify.Classifier
	ups      upstreams
	names    nameCerts
	signer   *assertion.Signer
	bearer   *bearer.Authenticator
	live     sync.Map // session id → context.CancelFunc, for closing a session
	bucket   *blob.Bucket

	tcpLn  net.Listener
	quicLn *quic.Listener
	opsLn  net.Listener
	apiLn  *connListener
	ready  atomic.Bool

	conns sync.WaitGroup
}

// New opens the data directory, the policy and the recordings, and issues
// the gateway's own SVID. Call Run to serve.
func New(ctx context.Context, cfg Config) (*Server, error) {
	cfg = cfg.withDefaults()
	id, err := spiffeid.FromSegments(cfg.TrustDomain, "gateway", cfg.Name)
	if err != nil {
		return nil, fmt.Errorf("making gateway id: %w", err)
	}
	data, err := OpenDataDir(ctx, cfg.DataDir, cfg.TrustDomain)
	if err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: cfg.Logger, data: data, id: id,
		reg: newRegistry(3 * cfg.Heartbeat), metrics: newMetrics(),
		pgKeys: postgres.NewKeys(), pgClass: pgclassify.New(cfg.StatementCache)}

	pol := &policy.Policy{}
	if cfg.PolicyPath != "" {
		if pol, err = policy.Load(cfg.PolicyPath); err != nil {
			data.Close()
			return nil, fmt.Errorf("loading policy: %w", err)
		}
	} else if pol, err = policy.Parse(nil); err != nil {
		data.Close()
		return nil, fmt.Errorf("making empty policy: %w", err)
	}
	s.policy = policy.NewEngine(pol)

	key, err := audit.LoadOrCreateKey(data.Path)
	if err != nil {
		data.Close()
		return nil, err
	}
	n, err := audit.RecoverUnsealed(ctx, data.RecordingsPath(), key, data.Store)
	if err != nil {
		s.log.Error("sealing recordings cut short", "err", err)
	}
	if n > 0 {
		s.log.Warn("sealed recordings cut short by the last stop as truncated", "count", n)
	}
	if n, err := audit.Rescan(ctx, data.RecordingsPath(), data.Store); err != nil {
		s.log.Error("rescanning recordings for the sessions index", "err", err)
	} else if n > 0 {
		s.log.Info("sessions index rows made again from their recordings", "count", n)
	}
	aopts := cfg.Audit
	if cfg.RecordingsURL != "" {
		if s.bucket, err = blob.OpenBucket(ctx, cfg.RecordingsURL); err != nil {
			data.Close()
			return nil, fmt.Errorf("opening recordings bucket: %w", err)
		}
		aopts.Bucket = s.bucket
	}
	aopts.Key, aopts.Logger, aopts.Index, aopts.OnFail = key, s.log, data.Store, s.closeSession
	if s.audit, err = audit.Open(data.RecordingsPath(), aopts); err != nil {
		data.Close()
		return nil, fmt.Errorf("opening recordings: %w", err)
	}
	s.metrics.watchAudit(s.audit)
	s.recorder = s.audit
	if cfg.Recorder != nil {
		s.recorder = cfg.Recorder
	}

	if s.signer, err = assertion.LoadOrCreate(filepath.Join(data.Path, assertion.KeyFile)); err != nil {
		s.audit.Close()
		data.Close()
		return nil, fmt.Errorf("loading assertion key: %w", err)
	}
	s.signer.Issuer = id.String()
	opts := cfg.Bearer
	if opts.Logger == nil {
		opts.Logger = s.log
	}
	if s.bearer, err = bearer.New(ctx, bearer.Config{TrustDomain: cfg.TrustDomain, OIDC: cfg.OIDC,
		APIKeys: data.Store, Options: opts}); err != nil {
		s.audit.Close()
		data.Close()
		return nil, err
	}

	svid, err := s.issueOwn(ctx)
	if err != nil {
		s.audit.Close()
		data.Close()
		return nil, err
	}
	s.svid = rotate.New(svid, func(ctx context.Context, key crypto.Signer, _ []byte) (*x509svid.SVID, error) {
		return data.Issue(ctx, pki.IssueRequest{ID: id, TTL: cfg.SVIDTTL, PublicKey: key.Public(), DNSNames: s.dnsNames()})
	}, rotate.Options{Logger: s.log, OnRotate: func(n *x509svid.SVID) {
		s.log.Info("gateway SVID renewed", "id", n.ID.String(), "not_after", n.Certificates[0].NotAfter)
	}})
	return s, nil
}

func (s *Server) dnsNames() []string {
	return []string{s.cfg.PublicName, "*." + s.cfg.PublicName}
}

func (s *Server) issueOwn(ctx context.Context) (*x509svid.SVID, error) {
	svid, err := s.data.Issue(ctx, pki.IssueRequest{ID: s.id, TTL: s.cfg.SVIDTTL, DNSNames: s.dnsNames()})
	if err != nil {
		return nil, fmt.Errorf("issuing gateway SVID: %w", err)
	}
	return svid, nil
}

// Data returns the server's data directory.
func (s *Server) Data() *DataDir { return s.data }

// Policy returns the live policy engine.
func (s *Server) Policy() *policy.Engine { return s.policy }

// Addr returns the TCP address the gateway listens on, once Run has started.
func (s *Server) Addr() net.Addr {
	if s.tcpLn == nil {
		return nil
	}
	return s.tcpLn.Addr()
}

// OpsAddr returns the ops listener's address, once Run has started.
func (s *Server) OpsAddr() net.Addr {
	if s.opsLn == nil {
		return nil
	}
	return s.opsLn.Addr()
}

// Listen binds the TCP, UDP and ops listeners. Run calls it when it has not
// been called; calling it first lets a caller learn the addresses.
func (s *Server) Listen() error {
	if s.tcpLn != nil {
		return nil
	}
	ln, err := net.Listen("tcp", s.cfg.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", s.cfg.Listen, err)
	}
	s.tcpLn = ln
	if !s.cfg.DisableQUIC {
		// The same port number on UDP, also when the TCP port was chosen by the kernel.
		tc := s.cfg.Tunnel.WithDefaults()
		if tc.StatelessResetKey, err = s.data.StatelessResetKey(); err != nil {
			ln.Close()
			return err
		}
		qln, err := quic.Listen(ln.Addr().String(), s.tunnelTLSConfig(), &tc)
		if err != nil {
			ln.Close()
			return fmt.Errorf("listening on udp %s: %w", ln.Addr(), err)
		}
		s.quicLn = qln
	}
	if s.cfg.OpsListen != "-" {
		ops, err := net.Listen("tcp", s.cfg.OpsListen)
		if err != nil {
			s.closeListeners()
			return fmt.Errorf("listening on %s: %w", s.cfg.OpsListen, err)
		}
		s.opsLn = ops
	}
	s.apiLn = newConnListener(ln.Addr())
	return nil
}

func (s *Server) closeListeners() {
	if s.tcpLn != nil {
		s.tcpLn.Close()
	}
	if s.quicLn != nil {
		s.quicLn.Close()
	}
	if s.opsLn != nil {
		s.opsLn.Close()
	}
	if s.apiLn != nil {
		s.apiLn.Close()
	}
}

// Run serves until ctx is done, then closes the listeners, the tunnels and
// the client connections, and flushes the recordings.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	var wg sync.WaitGroup
	run := func(name string, f func(context.Context) error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil && ctx.Err() == nil {
				s.log.Error(name+" stopped", "err", err)
				cancel()
			}
		}()
	}
	run("SVID rotation", s.svid.Run)
	if s.bucket != nil {
		run("recordings upload", func(ctx context.Context) error {
			n, err := audit.UploadMissing(ctx, s.bucket, s.data.RecordingsPath())
			if n > 0 {
				s.log.Info("copied recordings missing from the bucket", "count", n)
			}
			if err != nil {
				s.log.Error("copying recordings to the bucket", "err", err)
			}
			return nil
		})
	}
	if s.cfg.PolicyPath != "" {
		run("policy watch", func(ctx context.Context) error {
			return policy.Watch(ctx, s.cfg.PolicyPath, s.policy, s.log)
		})
	}
	run("tcp listener", s.serveTCP)
	if s.quicLn != nil {
		run("quic listener", s.serveQUIC)
	}
	apiSrv := &http.Server{Handler: s.apiHandler(), ErrorLog: slog.NewLogLogger(s.log.Handler(), slog.LevelDebug),
		ReadHeaderTimeout: s.cfg.HandshakeTimeout}
	run("api", func(ctx context.Context) error {
		if err := apiSrv.Serve(s.apiLn); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			return err
		}
		return nil
	})
	var opsSrv *http.Server
	if s.opsLn != nil {
		opsSrv = &http.Server{Handler: s.opsHandler(), ReadHeaderTimeout: 5 * time.Second}
		run("ops", func(ctx context.Context) error {
			if err := opsSrv.Serve(s.opsLn); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
	}
	s.ready.Store(true)
	s.log.Info("gateway ready", "listen", s.tcpLn.Addr().String(), "quic", s.quicLn != nil,
		"ops", addrString(s.opsLn), "id", s.id.String(), "public_name", s.cfg.PublicName)

	<-ctx.Done()
	s.ready.Store(false)
	s.closeListeners()
	apiSrv.Close()
	if opsSrv != nil {
		opsSrv.Close()
	}
	wg.Wait()
	s.conns.Wait()
	s.closeUpstreams()
	s.bearer.Close()
	s.audit.Close()
	if s.bucket != nil {
		s.bucket.Close()
	}
	s.data.Close()
	return nil
}

func addrString(ln net.Listener) string {
	if ln == nil {
		return ""
	}
	return ln.Addr().String()
}

// tlsCertificate returns the gateway's certificate for a handshake. A
// client that names an announced service gets a certificate that also
// carries that exact name: OpenSSL-based clients (curl) do not accept the
// *.PUBLIC_NAME wildcard when PUBLIC_NAME is a single label like
// localhost.
func (s *Server) tlsCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if h != nil {
		if service, ok := s.serviceFromSNI(h.ServerName); ok {
			if _, known := s.reg.protocol(service); known {
				c, err := s.nameCert(h.Context(), strings.ToLower(h.ServerName))
				if err == nil {
					return c, nil
				}
				s.log.Warn("issuing a certificate for a service name", "name", h.ServerName, "err", err)
			}
		}
	}
	svid, err := s.svid.GetX509SVID()
	if err != nil {
		return nil, err
	}
	return pki.TLSCertificate(svid)
}

// nameCerts caches the gateway's certificates for service names; each is
// renewed at half its life.
type nameCerts struct {
	mu sync.Mutex
	m  map[string]*tls.Certificate
}

func (s *Server) nameCert(ctx context.Context, name string) (*tls.Certificate, error) {
	s.names.mu.Lock()
	c := s.names.m[name]
	s.names.mu.Unlock()
	if c != nil {
		life := c.Leaf.NotAfter.Sub(c.Leaf.NotBefore)
		if time.Now().Before(c.Leaf.NotBefore.Add(life / 2)) {
			return c, nil
		}
	}
	// Issued without the lock (it writes to the store): handshakes for other
	// names go on meanwhile; two at once for one name both issue, and the
	// later certificate stays.
	svid, err := s.data.Issue(ctx, pki.IssueRequest{ID: s.id, TTL: s.cfg.SVIDTTL, DNSNames: append(s.dnsNames(), name)})
	if err != nil {
		return nil, err
	}
	if c, err = pki.TLSCertificate(svid); err != nil {
		return nil, err
	}
	s.names.mu.Lock()
	if s.names.m == nil {
		s.names.m = map[string]*tls.Certificate{}
	}
	s.names.m[name] = c
	s.names.mu.Unlock()
	return c, nil
}
