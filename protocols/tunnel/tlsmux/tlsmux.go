package tlsmux

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/yamux"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/protocols/tunnel"
)

const (
	// writeChunk is the largest yamux frame a Write produces.
	writeChunk = 64 << 10
	// drainTimeout bounds how long a closed stream discards what the peer
	// still sends.
	drainTimeout = time.Minute
	// minWindow is yamux's smallest allowed stream window.
	minWindow = 256 << 10
	// acceptBacklog is how many opened streams yamux holds before they are
	// accepted.
	acceptBacklog = 256
)

func yamuxConfig(c tunnel.Config) *yamux.Config {
	yc := yamux.DefaultConfig()
	yc.AcceptBacklog = acceptBacklog
	yc.EnableKeepAlive = true
	yc.KeepAliveInterval = c.KeepAlive
	yc.ConnectionWriteTimeout = c.IdleTimeout - c.KeepAlive
	yc.MaxStreamWindowSize = max(c.StreamWindow, minWindow)
	yc.StreamOpenTimeout = 0  // an unanswered open is the keepalive's business
	yc.StreamCloseTimeout = 0 // half-closed streams live as long as they need
	yc.LogOutput = nil
	yc.Logger = slog.NewLogLogger(c.Logger.With("transport", tunnel.TLS).Handler(), slog.LevelDebug)
	return yc
}

// Dial connects to a gateway at addr over TCP, runs the TLS 1.3 handshake and
// starts a yamux client once the gateway has confirmed the session. tlsConf
// must hold the client's certificate and verify the server
// (tlsconfig.MTLSClientConfig); ALPN tunnel.ALPN is offered if tlsConf
// offers none.
func Dial(ctx context.Context, addr string, tlsConf *tls.Config, cfg *tunnel.Config) (tunnel.Session, error) {
	c := cfg.WithDefaults()
	dctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	var d net.Dialer
	raw, err := d.DialContext(dctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("dialing %s over TLS: %w", addr, err)
	}
	conf := tunnel.TLSConfig(tlsConf)
	if conf.ServerName == "" {
		if host, _, err := net.SplitHostPort(addr); err == nil {
			conf.ServerName = host
		}
	}
	s, err := Client(dctx, tls.Client(NewBatchConn(raw), conf), &c)
	if err != nil {
		return nil, fmt.Errorf("dialing %s over TLS: %w", addr, err)
	}
	return s, nil
}

// Client runs the client side of a session on conn: the TLS handshake unless
// it is done, the checks (TLS 1.3, ALPN, a SPIFFE ID), the wait for the
// server's confirmation, then yamux. ctx bounds the setup only. On error conn
// is closed.
func Client(ctx context.Context, conn *tls.Conn, cfg *tunnel.Config) (tunnel.Session, error) {
	c := cfg.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	peer, err := handshake(ctx, conn)
	if err == nil {
		err = withDeadline(ctx, conn, func() error {
			var b [1]byte
			if _, err := io.ReadFull(conn, b[:]); err != nil {
				return fmt.Errorf("reading session confirmation: %w", err)
			}
			if b[0] != tunnel.SessionAccepted {
				return fmt.Errorf("reading session confirmation: got %#x, want %#x", b[0], tunnel.SessionAccepted)
			}
			return nil
		})
	}
	var mux *yamux.Session
	if err == nil {
		mux, err = yamux.Client(newFrameConn(conn), yamuxConfig(c))
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return newSession(mux, conn, peer, c), nil
}

// Server runs the server side of a session on conn: the TLS handshake unless
// it is done (the gateway usually has done it to see the ALPN), the checks
// (TLS 1.3, ALPN, a SPIFFE ID), the confirmation, then yamux. ctx bounds the
// setup only. On error conn is closed.
func Server(ctx context.Context, conn *tls.Conn, cfg *tunnel.Config) (tunnel.Session, error) {
	c := cfg.WithDefaults()
	ctx, cancel := context.WithTimeout(ctx, c.HandshakeTimeout)
	defer cancel()
	peer, err := handshake(ctx, conn)
	if err == nil {
		err = withDeadline(ctx, conn, func() error {
			if _, err := conn.Write([]byte{tunnel.SessionAccepted}); err != nil {
				return fmt.Errorf("confirming session: %w", err)
			}
			return nil
		})
	}
	var mux *yamux.Session
	if err == nil {
		mux, err = yamux.Server(newFrameConn(conn), yamuxConfig(c))
	}
	if err != nil {
		_ = conn.Close()
		return nil, err
	}
	return newSession(mux, conn, peer, c), nil
}

func handshake(ctx context.Context, conn *tls.Conn) (spiffeid.ID, error) {
	if err := conn.HandshakeContext(ctx); err != nil {
		return spiffeid.ID{}, fmt.Errorf("TLS handshake: %w", err)
	}
	return tunnel.CheckConnectionState(conn.ConnectionState())
}

// withDeadline runs fn with conn's deadline set from ctx, and breaks fn off
// when ctx is cancelled.
func withDeadline(ctx context.Context, conn net.Conn, fn func() error) error {
	if d, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(d)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = conn.SetDeadline(time.Unix(1, 0))
		close(fired)
	})
	err := fn()
	if !stop() {
		<-fired
		if err != nil {
			err = fmt.Errorf("%w (%w)", err, context.Cause(ctx))
		}
	}
	_ = conn.SetDeadline(time.Time{})
	return err
}

// session is a tunnel.Session over yamux on one TLS connection.
type session struct {
	mux   *yamux.Session
	conn  *tls.Conn
	peer  spiffeid.ID
	slots chan struct{} // one per accepted stream not yet closed
}

func newSession(mux *yamux.Session, conn *tls.Conn, peer spiffeid.ID, c tunnel.Config) *session {
	return &session{mux: mux, conn: conn, peer: peer, slots: make(chan struct{}, c.MaxStreams)}
}

func (s *session) Peer() spiffeid.ID     { return s.peer }
func (s *session) Transport() string     { return tunnel.TLS }
func (s *session) RemoteAddr() net.Addr  { return s.conn.RemoteAddr() }
func (s *session) Done() <-chan struct{} { return s.mux.CloseChan() }
func (s *session) Close() error          { return s.mux.Close() }

func (s *session) OpenStream(ctx context.Context) (net.Conn, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("opening yamux stream: %w", err)
	}
	// yamux's OpenStream takes no context; it blocks only while too many
	// opens are unanswered.
	if ctx.Done() == nil {
		st, err := s.mux.OpenStream()
		if err != nil {
			return nil, fmt.Errorf("opening yamux stream: %w", err)
		}
		return &stream{Stream: st}, nil
	}
	type result struct {
		st  *yamux.Stream
		err error
	}
	ch := make(chan result, 1)
	go func() {
		st, err := s.mux.OpenStream()
		ch <- result{st, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, fmt.Errorf("opening yamux stream: %w", r.err)
		}
		return &stream{Stream: r.st}, nil
	case <-ctx.Done():
		go func() {
			if r := <-ch; r.st != nil {
				_ = r.st.Close()
			}
		}()
		return nil, fmt.Errorf("opening yamux stream: %w", ctx.Err())
	}
}

func (s *session) AcceptStream(ctx context.Context) (net.Conn, error) {
	select {
	case s.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, fmt.Errorf("accepting yamux stream: %w", ctx.Err())
	case <-s.mux.CloseChan():
		return nil, fmt.Errorf("accepting yamux stream: %w", yamux.ErrSessionShutdown)
	}
	st, err := s.mux.AcceptStreamWithContext(ctx)
	if err != nil {
		<-s.slots
		return nil, fmt.Errorf("accepting yamux stream: %w", err)
	}
	return &stream{Stream: st, release: func() { <-s.slots }}, nil
}

// stream is a yamux stream that behaves like a QUIC stream on Close (see
// the package documentation).
type stream struct {
	*yamux.Stream
	release func() // frees the session's slot; nil for streams we opened

	wmu       sync.Mutex   // keeps one Write's frames together
	rmu       sync.RWMutex // held shared by Reads; see drain
	closed    atomic.Bool
	closeOnce sync.Once
}

func (s *stream) Read(b []byte) (int, error) {
	s.rmu.RLock()
	defer s.rmu.RUnlock()
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	n, err := s.Stream.Read(b)
	if s.closed.Load() {
		return 0, net.ErrClosed
	}
	return n, mapErr(err)
}

func (s *stream) Write(b []byte) (int, error) {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	total := 0
	for len(b) > 0 {
		if s.closed.Load() {
			return total, net.ErrClosed
		}
		n, err := s.Stream.Write(b[:min(len(b), writeChunk)])
		total += n
		if err != nil {
			return total, mapErr(err)
		}
		b = b[n:]
	}
	return total, nil
}

// CloseWrite sends FIN; reading goes on.
func (s *stream) CloseWrite() error {
	if err := s.Stream.Close(); err != nil {
		return fmt.Errorf("closing yamux stream for writing: %w", err)
	}
	return nil
}

// Close sends FIN, fails further local reads and writes, and discards what
// the peer still sends until it closes its side. It never fails.
func (s *stream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		_ = s.Stream.Close()
		_ = s.Stream.SetReadDeadline(time.Now()) // wake blocked readers
		if s.release != nil {
			s.release()
		}
		go s.drain()
	})
	return nil
}

func (s *stream) drain() {
	// Wait for the Reads that Close woke up to return: they must not go
	// back to sleep under the drain's later deadline. Reads that come after
	// see closed and return at once.
	s.rmu.Lock()
	s.rmu.Unlock()
	_ = s.Stream.SetReadDeadline(time.Now().Add(drainTimeout))
	_, _ = io.Copy(io.Discard, s.Stream)
}

// deadlineError is yamux's timeout as the standard library reports it.
type deadlineError struct{ error }

func (deadlineError) Timeout() bool   { return true }
func (deadlineError) Temporary() bool { return true }
func (deadlineError) Unwrap() error   { return os.ErrDeadlineExceeded }

// mapErr makes yamux's deadline error match os.ErrDeadlineExceeded, as
// net.Conn promises.
func mapErr(err error) error {
	if errors.Is(err, yamux.ErrTimeout) {
		return deadlineError{err}
	}
	return err
}

// Listener accepts tunnel sessions over TLS on a TCP port of their own. (The
// gateway shares its port with clients and calls Server instead.)
type Listener struct {
	ln      net.Listener
	tlsConf *tls.Config
	cfg     tunnel.Config

	ready  chan tunnel.Session
	ctx    context.Context // cancelled by Close
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu       sync.Mutex
	closed   bool
	sessions map[tunnel.Session]struct{}
}

// Listen listens for TLS tunnel sessions on the TCP address addr. tlsConf
// must hold the server's certificate and verify clients
// (tlsconfig.MTLSServerConfig); ALPN tunnel.ALPN is offered if tlsConf offers
// none. Handshakes run in the background, each bounded by
// Config.HandshakeTimeout.
func Listen(addr string, tlsConf *tls.Config, cfg *tunnel.Config) (*Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on TCP %s: %w", addr, err)
	}
	l := &Listener{
		ln:       ln,
		tlsConf:  tunnel.TLSConfig(tlsConf),
		cfg:      cfg.WithDefaults(),
		ready:    make(chan tunnel.Session),
		sessions: make(map[tunnel.Session]struct{}),
	}
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.wg.Add(1)
	go l.serve()
	return l, nil
}

func (l *Listener) serve() {
	defer l.wg.Done()
	var delay time.Duration
	for {
		conn, err := l.ln.Accept()
		if err != nil {
			select {
			case <-l.ctx.Done():
				return
			default:
			}
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			// Out of file descriptors and the like: back off and retry.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			l.cfg.Logger.Warn("accepting TCP connection", "transport", tunnel.TLS, "err", err)
			select {
			case <-time.After(delay):
			case <-l.ctx.Done():
				return
			}
			continue
		}
		delay = 0
		l.wg.Add(1)
		go l.handshake(conn)
	}
}

func (l *Listener) handshake(conn net.Conn) {
	defer l.wg.Done()
	s, err := Server(l.ctx, tls.Server(NewBatchConn(conn), l.tlsConf), &l.cfg)
	if err != nil {
		l.cfg.Logger.Info("refusing tunnel session", "transport", tunnel.TLS, "remote", conn.RemoteAddr().String(), "err", err)
		return
	}
	if !l.track(s) {
		_ = s.Close()
		return
	}
	select {
	case l.ready <- s:
	case <-l.ctx.Done():
		_ = s.Close()
	}
}

func (l *Listener) track(s tunnel.Session) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	l.sessions[s] = struct{}{}
	go func() {
		<-s.Done()
		l.mu.Lock()
		delete(l.sessions, s)
		l.mu.Unlock()
	}()
	return true
}

// Accept waits for the next confirmed session. After Close it returns an
// error wrapping net.ErrClosed.
func (l *Listener) Accept(ctx context.Context) (tunnel.Session, error) {
	select {
	case s := <-l.ready:
		return s, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("accepting TLS session: %w", ctx.Err())
	case <-l.ctx.Done():
		return nil, fmt.Errorf("accepting TLS session: %w", net.ErrClosed)
	}
}

// Addr is the TCP address the listener is bound to.
func (l *Listener) Addr() net.Addr { return l.ln.Addr() }

// Close stops accepting, aborts handshakes in progress and closes every
// session the listener accepted.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	live := make([]tunnel.Session, 0, len(l.sessions))
	for s := range l.sessions {
		live = append(live, s)
	}
	l.mu.Unlock()

	l.cancel()
	err := l.ln.Close()
	for _, s := range live {
		_ = s.Close()
	}
	l.wg.Wait()
	if err != nil {
		return fmt.Errorf("closing TLS listener: %w", err)
	}
	return nil
}
