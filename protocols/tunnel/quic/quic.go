package quic

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"

	quicgo "github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols/tunnel"
)

// QUIC application error codes used when closing a connection.
const (
	codeClosed  quicgo.ApplicationErrorCode = 0 // normal close
	codeRefused quicgo.ApplicationErrorCode = 1 // the peer's certificate or ALPN did not do
)

// connWindowFactor sizes the connection receive window from the stream window.
const connWindowFactor = 4

func quicConfig(c tunnel.Config) *quicgo.Config {
	return &quicgo.Config{
		HandshakeIdleTimeout:       c.HandshakeTimeout / 2, // quic-go aborts a handshake after twice this
		MaxIdleTimeout:             c.IdleTimeout,
		KeepAlivePeriod:            c.KeepAlive,
		MaxIncomingStreams:         int64(c.MaxStreams),
		MaxIncomingUniStreams:      1, // the server's session confirmation
		MaxStreamReceiveWindow:     uint64(c.StreamWindow),
		MaxConnectionReceiveWindow: uint64(c.StreamWindow) * connWindowFactor,
	}
}

// Dial connects to a gateway at addr over QUIC and waits for the gateway to
// confirm the session. tlsConf must hold the client's certificate and verify
// the server (go-spiffe's tlsconfig.MTLSClientConfig); ALPN tunnel.ALPN is
// offered if tlsConf offers none.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, cfg *tunnel.Config) (tunnel.Session, error) {
	c := cfg.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	conn, err := quicgo.DialAddr(ctx, addr, tunnel.TLSConfig(tlsConf), quicConfig(c))
	if err != nil {
		return nil, fmt.Errorf("dialing %s over QUIC: %w", addr, err)
	}
	s, err := newSession(conn)
	if err != nil {
		_ = conn.CloseWithError(codeRefused, "")
		return nil, fmt.Errorf("dialing %s over QUIC: %w", addr, err)
	}
	if err := awaitConfirmation(ctx, conn); err != nil {
		_ = conn.CloseWithError(codeRefused, "")
		return nil, fmt.Errorf("dialing %s over QUIC: %w", addr, err)
	}
	return s, nil
}

// awaitConfirmation waits for the server's one-byte confirmation, which it
// sends only after it has verified our certificate.
func awaitConfirmation(ctx context.Context, conn *quicgo.Conn) error {
	st, err := conn.AcceptUniStream(ctx)
	if err != nil {
		return fmt.Errorf("waiting for session confirmation: %w", err)
	}
	defer st.CancelRead(0)
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetReadDeadline(d)
	}
	var b [1]byte
	if _, err := io.ReadFull(st, b[:]); err != nil {
		return fmt.Errorf("reading session confirmation: %w", err)
	}
	if b[0] != tunnel.SessionAccepted {
		return fmt.Errorf("reading session confirmation: got %#x, want %#x", b[0], tunnel.SessionAccepted)
	}
	return nil
}

// confirm sends the server's confirmation.
func confirm(conn *quicgo.Conn) error {
	st, err := conn.OpenUniStream()
	if err != nil {
		return fmt.Errorf("confirming session: %w", err)
	}
	if _, err := st.Write([]byte{tunnel.SessionAccepted}); err != nil {
		return fmt.Errorf("confirming session: %w", err)
	}
	if err := st.Close(); err != nil {
		return fmt.Errorf("confirming session: %w", err)
	}
	return nil
}

// Listener accepts tunnel sessions over QUIC on one UDP socket.
type Listener struct {
	pc  net.PacketConn
	tr  *quicgo.Transport
	ln  *quicgo.Listener
	cfg tunnel.Config

	mu       sync.Mutex
	closed   bool
	sessions map[*session]struct{}
}

// Listen listens for QUIC tunnel sessions on the UDP address addr. tlsConf
// must hold the server's certificate and verify clients
// (tlsconfig.MTLSServerConfig); ALPN tunnel.ALPN is offered if tlsConf offers
// none.
func Listen(addr string, tlsConf *tls.Config, cfg *tunnel.Config) (*Listener, error) {
	udpAddr, err := net.ResolveUDPAddr("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", addr, err)
	}
	pc, err := net.ListenUDP("udp", udpAddr)
	if err != nil {
		return nil, fmt.Errorf("listening on UDP %s: %w", addr, err)
	}
	c := cfg.WithDefaults()
	tr := &quicgo.Transport{Conn: pc, StatelessResetKey: (*quicgo.StatelessResetKey)(c.StatelessResetKey)}
	ln, err := tr.Listen(tunnel.TLSConfig(tlsConf), quicConfig(c))
	if err != nil {
		_ = tr.Close()
		_ = pc.Close()
		return nil, fmt.Errorf("listening for QUIC on %s: %w", addr, err)
	}
	return &Listener{pc: pc, tr: tr, ln: ln, cfg: c, sessions: make(map[*session]struct{})}, nil
}

// Accept waits for the next session whose handshake succeeded and confirms
// it. Sessions that fail the checks after the handshake are closed and
// skipped. After Close it returns an error wrapping net.ErrClosed.
func (l *Listener) Accept(ctx context.Context) (tunnel.Session, error) {
	for {
		conn, err := l.ln.Accept(ctx)
		if err != nil {
			if errors.Is(err, quicgo.ErrServerClosed) {
				err = net.ErrClosed
			}
			return nil, fmt.Errorf("accepting QUIC session: %w", err)
		}
		s, err := newSession(conn)
		if err == nil {
			err = confirm(conn)
		}
		if err != nil {
			l.cfg.Logger.Info("refusing tunnel session", "transport", tunnel.QUIC, "remote", conn.RemoteAddr().String(), "err", err)
			_ = conn.CloseWithError(codeRefused, "")
			continue
		}
		if !l.track(s) {
			_ = s.Close()
			return nil, fmt.Errorf("accepting QUIC session: %w", net.ErrClosed)
		}
		return s, nil
	}
}

func (l *Listener) track(s *session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = struct{}{}
	context.AfterFunc(s.conn.Context(), func() {
		l.mu.Lock()
		delete(l.sessions, s)
		l.mu.Unlock()
	})
	return true
}

// Addr is the UDP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, closes every session the listener accepted and
// releases the UDP socket.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	live := make([]*session, 0, len(l.sessions))
	for s := range l.sessions {
		live = append(live, s)
	}
	l.mu.Unlock()

	err := l.ln.Close()
	// Sessions whose handshake was done but that nobody accepted yet would
	// be dropped by the transport without a word, and their peers would
	// wait for a confirmation until their dial timed out: close them.
	for {
		conn, aerr := l.ln.Accept(context.Background()) // drains, then fails
		if aerr != nil {
			break
		}
		_ = conn.CloseWithError(codeClosed, "listener closed")
	}
	for _, s := range live {
		_ = s.Close()
	}
	if e := l.tr.Close(); err == nil {
		err = e
	}
	if e := l.pc.Close(); err == nil {
		err = e
	}
	if err != nil {
		return fmt.Errorf("closing QUIC listener: %w", err)
	}
	return nil
}

// session is a tunnel.Session over one QUIC connection.
type session struct {
	conn *quicgo.Conn
	peer spiffeid.ID
}

func newSession(conn *quicgo.Conn) (*session, error) {
	peer, err := tunnel.CheckConnectionState(conn.ConnectionState().TLS)
	if err != nil {
		return nil, err
	}
	return &session{conn: conn, peer: peer}, nil
}

func (s *session) Peer() spiffeid.ID     { return s.peer }
func (s *session) Transport() string     { return tunnel.QUIC }
func (s *session) RemoteAddr() net.Addr  { return s.conn.RemoteAddr() }
func (s *session) Done() <-chan struct{} { return s.conn.Context().Done() }
func (s *session) Close() error          { return s.conn.CloseWithError(codeClosed, "") }
func (s *session) wrap(st *quicgo.Stream) net.Conn {
	return &stream{Stream: st, local: s.conn.LocalAddr(), remote: s.conn.RemoteAddr()}
}

func (s *session) OpenStream(ctx context.Context) (net.Conn, error) {
	st, err := s.conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("opening QUIC stream: %w", err)
	}
	return s.wrap(st), nil
}

func (s *session) AcceptStream(ctx context.Context) (net.Conn, error) {
	st, err := s.conn.AcceptStream(ctx)
	if err != nil {
		return nil, fmt.Errorf("accepting QUIC stream: %w", err)
	}
	return s.wrap(st), nil
}

// stream is a QUIC stream as a net.Conn.
type stream struct {
	*quicgo.Stream
	local, remote net.Addr
}

func (s *stream) LocalAddr() net.Addr  { return s.local }
func (s *stream) RemoteAddr() net.Addr { return s.remote }

// CloseWrite sends FIN; reading goes on.
func (s *stream) CloseWrite() error {
	if err := s.Stream.Close(); err != nil {
		return fmt.Errorf("closing QUIC stream for writing: %w", err)
	}
	return nil
}

// Close sends FIN and stops reading: further local reads fail and the peer's
// writes are refused (STOP_SENDING). It never fails: a stream the peer has
// already reset is closed all the same.
func (s *stream) Close() error {
	_ = s.Stream.Close()
	s.Stream.CancelRead(0)
	return nil
}
