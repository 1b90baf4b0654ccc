package http

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"net/http/httputil"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"

	"github.com/postern/postern/protocols"
)

// Defaults of Config's limits.
const (
	DefaultMaxHeaderBytes    = 64 << 10
	DefaultReadHeaderTimeout = 10 * time.Second
	DefaultIdleTimeout       = 2 * time.Minute
	// DefaultMaxConcurrentStreams bounds the requests in flight on one
	// HTTP/2 connection.
	DefaultMaxConcurrentStreams = 250
)

// Caller is who sent a request: the identity the policy decides on and how
// it was proven (protocols.AuthSVID, AuthOIDC or AuthAPIKey).
type Caller struct {
	ID     spiffeid.ID
	Groups []string
	Auth   string
}

// Config is what serving one client connection needs.
type Config struct {
	Session string // the audit session of the connection
	Service string
	GRPC    bool // the service speaks gRPC: calls are decided by method
	Source  string
	Peer    Caller // the identity of the client's SVID; a zero ID when it presented none
	// Authenticate checks a bearer token (the text after "Bearer "); nil
	// accepts none. Its error is shown to the client.
	Authenticate func(ctx context.Context, token string) (Caller, error)
	Authorizer   protocols.Authorizer
	Recorder     protocols.Recorder
	// Transport carries allowed requests to the upstream: HTTP/1.1 for
	// HTTP services, HTTP/2 for gRPC. The request's URL names the service
	// as its host.
	Transport http.RoundTripper
	// Assert returns the Postern-Jwt-Assertion value for a caller of the
	// service.
	Assert func(now time.Time, c Caller, audience string) (string, error)
	// Observe, when set, is told each request's verdict and status (HTTP
	// status, or gRPC status code), for metrics.
	Observe func(verdict string, status int)

	MaxHeaderBytes       int
	ReadHeaderTimeout    time.Duration
	IdleTimeout          time.Duration
	MaxConcurrentStreams uint32
	Logger               *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.MaxHeaderBytes <= 0 {
		c.MaxHeaderBytes = DefaultMaxHeaderBytes
	}
	if c.ReadHeaderTimeout <= 0 {
		c.ReadHeaderTimeout = DefaultReadHeaderTimeout
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = DefaultIdleTimeout
	}
	if c.MaxConcurrentStreams == 0 {
		c.MaxConcurrentStreams = DefaultMaxConcurrentStreams
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Recorder == nil {
		c.Recorder = protocols.RecorderFunc(func(protocols.Event) {})
	}
	return c
}

// Result sums up a connection: its requests and the bytes of their bodies
// (upgraded connections' bytes are not counted).
type Result struct {
	Requests int64
	Denied   int64
	BytesIn  int64 // request bodies
	BytesOut int64 // response bodies
}

// Serve serves HTTP/2 (when the connection negotiated "h2") or HTTP/1.1 on
// conn until the client closes it, it stays idle for IdleTimeout, or ctx is
// done. The TLS handshake must be complete.
func Serve(ctx context.Context, conn *tls.Conn, cfg Config) Result {
	cfg = cfg.withDefaults()
	h := &handler{cfg: cfg}
	if !cfg.GRPC { // gRPC calls go through relayCall
		h.proxy = &httputil.ReverseProxy{
			Rewrite:      h.rewrite,
			Transport:    cfg.Transport,
			ErrorHandler: h.upstreamError,
			BufferPool:   copyBuffers,
			ErrorLog:     slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug),
		}
	}
	if conn.ConnectionState().NegotiatedProtocol == http2.NextProtoTLS {
		// ServeConn does not watch its context: close the connection when
		// the gateway stops.
		stop := context.AfterFunc(ctx, func() { conn.Close() })
		defer stop()
		srv := &http2.Server{MaxConcurrentStreams: cfg.MaxConcurrentStreams, IdleTimeout: cfg.IdleTimeout,
			MaxReadFrameSize: 1 << 20}
		srv.ServeConn(conn, &http2.ServeConnOpts{Context: ctx, Handler: h,
			BaseConfig: &http.Server{MaxHeaderBytes: cfg.MaxHeaderBytes, ReadHeaderTimeout: cfg.ReadHeaderTimeout,
				ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelDebug)}})
	} else {
		serveHTTP1(ctx, conn, h)
	}
	conn.Close()
	return h.result()
}

// serveHTTP1 runs an http.Server on the one connection and returns when it
// is closed, or when it was hijacked (an upgrade) and its handler returned.
func serveHTTP1(ctx context.Context, conn *tls.Conn, h *handler) {
	done := make(chan struct{})
	var once sync.Once
	finish := func() { once.Do(func() { close(done) }) }
	var hijacked atomic.Bool
	h.afterRequest = func() {
		if hijacked.Load() {
			finish()
		}
	}
	srv := &http.Server{
		Handler:           h,
		MaxHeaderBytes:    h.cfg.MaxHeaderBytes,
		ReadHeaderTimeout: h.cfg.ReadHeaderTimeout,
		IdleTimeout:       h.cfg.IdleTimeout,
		ErrorLog:          slog.NewLogLogger(h.cfg.Logger.Handler(), slog.LevelDebug),
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateClosed:
				finish()
			case http.StateHijacked:
				hijacked.Store(true)
			}
		},
	}
	ln := newConnListener(conn)
	go srv.Serve(ln)
	select {
	case <-done:
	case <-ctx.Done():
		srv.Close()
		<-done
	}
	ln.Close()
}

// connListener hands one connection to an http.Server, then blocks until
// closed.
type connListener struct {
	conn      net.Conn
	once      sync.Once
	closeOnce sync.Once
	closed    chan struct{}
}

func newConnListener(c net.Conn) *connListener {
	return &connListener{conn: c, closed: make(chan struct{})}
}

func (l *connListener) Accept() (net.Conn, error) {
	var c net.Conn
	l.once.Do(func() { c = l.conn })
	if c != nil {
		return c, nil
	}
	<-l.closed
	return nil, net.ErrClosed
}

func (l *connListener) Close() error {
	l.closeOnce.Do(func() { close(l.closed) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.conn.LocalAddr() }

// copyBuffers lends the proxies their 32 KiB body copy buffers.
var copyBuffers = &bufferPool{sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}}

type bufferPool struct{ p sync.Pool }

func (b *bufferPool) Get() []byte  { return *b.p.Get().(*[]byte) }
func (b *bufferPool) Put(s []byte) { b.p.Put(&s) }
