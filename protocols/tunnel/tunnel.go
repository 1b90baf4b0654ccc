package tunnel

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// ALPN is the TLS application protocol of the tunnel, on QUIC and on TLS.
const ALPN = "postern-tunnel/1"

// Transport names, as returned by Session.Transport.
const (
	QUIC = "quic"
	TLS  = "tls"
)

// SessionAccepted is the byte a server sends to confirm a session after the
// TLS handshake (see the package documentation).
const SessionAccepted byte = 0x01

// Session is an authenticated, multiplexed connection between an agent and a
// gateway.
type Session interface {
	// Peer is the SPIFFE ID of the verified peer certificate, fixed at the
	// handshake.
	Peer() spiffeid.ID
	// OpenStream opens a new stream. The peer sees it once something is
	// written on it (a Header, always).
	OpenStream(ctx context.Context) (net.Conn, error)
	// AcceptStream waits for the next stream the peer opens.
	AcceptStream(ctx context.Context) (net.Conn, error)
	// Close closes the session and all its streams.
	Close() error
	// Done is closed when the session has died: the peer closed it or went
	// silent for longer than the idle timeout, or Close was called.
	Done() <-chan struct{}
	// Transport is QUIC or TLS.
	Transport() string
	// RemoteAddr is the peer's network address.
	RemoteAddr() net.Addr
}

// CloseWriter is implemented by every stream a Session returns. CloseWrite
// half-closes the stream: the peer reads io.EOF, and this side can still
// read.
type CloseWriter interface {
	CloseWrite() error
}

// Defaults of Config.
const (
	DefaultKeepAlive        = 10 * time.Second
	DefaultIdleTimeout      = 30 * time.Second
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultMaxStreams       = 10000
	DefaultStreamWindow     = 16 << 20
)

// Config tunes a Session. A nil *Config means defaults.
type Config struct {
	// KeepAlive is how often an idle session sends a keepalive. Default 10s;
	// it is lowered to half of IdleTimeout if it is not below IdleTimeout.
	KeepAlive time.Duration
	// IdleTimeout is how long a silent peer is given before the session is
	// declared dead. Default 30s.
	IdleTimeout time.Duration
	// HandshakeTimeout bounds dialing, the TLS handshake and the session
	// confirmation. Default 10s.
	HandshakeTimeout time.Duration
	// MaxStreams is how many streams the peer may have open towards us at
	// once. Default 10000.
	MaxStreams int
	// StreamWindow is the receive window of each stream, which caps a
	// stream's throughput at window/RTT and its buffered memory at window.
	// Default 16 MiB.
	StreamWindow uint32
	// StatelessResetKey, on a QUIC listener, makes it answer the packets of
	// connections it does not know — those of the previous process, after a
	// restart on the same port — with a stateless reset, so that their
	// peers learn at once that the connection is gone instead of at its
	// idle timeout. It must stay the same across restarts. Nil: none.
	StatelessResetKey *[32]byte
	// Logger receives the transports' diagnostics. Default: discard.
	Logger *slog.Logger
}

// WithDefaults returns a copy of c with every zero field set to its default.
// A nil receiver gives all defaults.
func (c *Config) WithDefaults() Config {
	var out Config
	if c != nil {
		out = *c
	}
	if out.IdleTimeout <= 0 {
		out.IdleTimeout = DefaultIdleTimeout
	}
	if out.KeepAlive <= 0 {
		out.KeepAlive = DefaultKeepAlive
	}
	if out.KeepAlive >= out.IdleTimeout {
		out.KeepAlive = out.IdleTimeout / 2
	}
	if out.HandshakeTimeout <= 0 {
		out.HandshakeTimeout = DefaultHandshakeTimeout
	}
	if out.MaxStreams <= 0 {
		out.MaxStreams = DefaultMaxStreams
	}
	if out.StreamWindow == 0 {
		out.StreamWindow = DefaultStreamWindow
	}
	if out.Logger == nil {
		out.Logger = slog.New(slog.DiscardHandler)
	}
	return out
}

// PeerID returns the SPIFFE ID of the first peer certificate of a verified
// connection. An ID without a path (a bare trust domain) is an error.
func PeerID(cs tls.ConnectionState) (spiffeid.ID, error) {
	if len(cs.PeerCertificates) == 0 {
		return spiffeid.ID{}, errors.New("reading peer ID: no peer certificate")
	}
	id, err := x509svid.IDFromCert(cs.PeerCertificates[0])
	if err != nil {
		return spiffeid.ID{}, fmt.Errorf("reading peer ID: %w", err)
	}
	if id.Path() == "" {
		// The X509-SVID specification forbids a leaf with the bare trust
		// domain ID.
		return spiffeid.ID{}, fmt.Errorf("reading peer ID: %v has no path", id)
	}
	return id, nil
}

// CheckConnectionState checks what both transports require of a finished
// handshake — TLS 1.3, ALPN negotiated to ALPN, a peer certificate with a
// SPIFFE ID — and returns the peer's ID.
func CheckConnectionState(cs tls.ConnectionState) (spiffeid.ID, error) {
	if !cs.HandshakeComplete {
		return spiffeid.ID{}, errors.New("checking connection: handshake not complete")
	}
	if cs.Version != tls.VersionTLS13 {
		return spiffeid.ID{}, fmt.Errorf("checking connection: got TLS version %#x, want TLS 1.3", cs.Version)
	}
	if cs.NegotiatedProtocol != ALPN {
		return spiffeid.ID{}, fmt.Errorf("checking connection: got ALPN %q, want %q", cs.NegotiatedProtocol, ALPN)
	}
	return PeerID(cs)
}

// TLSConfig returns a copy of conf made fit for the tunnel: ALPN is offered
// when conf offers no protocol, and TLS 1.3 is the minimum.
func TLSConfig(conf *tls.Config) *tls.Config {
	c := conf.Clone()
	if c == nil {
		c = &tls.Config{}
	}
	if len(c.NextProtos) == 0 {
		c.NextProtos = []string{ALPN}
	}
	if c.MinVersion < tls.VersionTLS13 {
		c.MinVersion = tls.VersionTLS13
	}
	return c
}
