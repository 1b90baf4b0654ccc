package gateway

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/enroll"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/tlsmux"
)

// Postgres request codes that may come before TLS.
const (
	pgCancelRequest = 80877102
	pgSSLRequest    = 80877103
	pgGSSENCRequest = 80877104
	pgProtocol3     = 196608
)

// firstBytes is what the first bytes of a connection say it is.
type firstBytes int

const (
	firstBytesUnknown firstBytes = iota
	firstBytesShort              // fewer bytes than needed to tell
	firstBytesTLS
	firstBytesSSLRequest
	firstBytesGSSENCRequest
	firstBytesPostgresStartup
	firstBytesCancelRequest
)

// classify tells a connection's kind from its first (up to 8) bytes: a TLS
// handshake record, or one of the Postgres messages a client may send before
// TLS.
func classify(head []byte) firstBytes {
	if len(head) == 0 {
		return firstBytesShort
	}
	if head[0] == 0x16 { // TLS handshake record
		return firstBytesTLS
	}
	if len(head) < 8 {
		return firstBytesShort
	}
	length, code := binary.BigEndian.Uint32(head[:4]), binary.BigEndian.Uint32(head[4:8])
	switch {
	case length == 8 && code == pgSSLRequest:
		return firstBytesSSLRequest
	case length == 8 && code == pgGSSENCRequest:
		return firstBytesGSSENCRequest
	case length >= 16 && length <= 268 && code == pgCancelRequest:
		return firstBytesCancelRequest
	case length > 8 && length < 10000 && code == pgProtocol3:
		return firstBytesPostgresStartup
	}
	return firstBytesUnknown
}

func (s *Server) serveTCP(ctx context.Context) error {
	var delay time.Duration
	for {
		conn, err := s.tcpLn.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return nil
			}
			// Temporary failures (out of file descriptors): back off, keep serving.
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accepting connection", "err", err, "retry_in", delay)
			time.Sleep(delay)
			continue
		}
		delay = 0
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer s.recoverConn(conn)
			s.handleConn(ctx, conn)
		}()
	}
}

// recoverConn keeps a panic in one connection's handler from taking the
// gateway down: it is logged, counted and the connection closed.
func (s *Server) recoverConn(conn net.Conn) {
	if v := recover(); v != nil {
		s.metrics.panics.Inc()
		s.log.Error("connection handler panicked", "remote", conn.RemoteAddr().String(), "panic", fmt.Sprint(v))
		conn.Close()
	}
}

// handleConn tells the connection's kind apart by its first bytes, finishes
// the TLS handshake within the handshake timeout and dispatches it.
func (s *Server) handleConn(ctx context.Context, raw net.Conn) {
	source := raw.RemoteAddr().String()
	raw.SetDeadline(time.Now().Add(s.cfg.HandshakeTimeout))
	br := bufio.NewReaderSize(raw, 1024)
	// BatchConn lets an agent tunnel send each yamux frame's TLS records
	// in one write; other connections write straight through it.
	conn := tlsmux.NewBatchConn(&peekedConn{Conn: raw, r: br})

	for {
		head, err := br.Peek(8)
		if len(head) == 0 {
			s.refuse(ctx, raw, source, "", "no TLS ClientHello", describeReadErr(err))
			return
		}
		kind := classify(head)
		if kind == firstBytesShort {
			s.refuse(ctx, raw, source, "", "unrecognised protocol", describeReadErr(err))
			return
		}
		if kind == firstBytesTLS {
			break
		}
		switch kind {
		case firstBytesSSLRequest:
			br.Discard(8)
			if _, err := raw.Write([]byte{'S'}); err != nil {
				return
			}
			continue // TLS follows
		case firstBytesGSSENCRequest:
			br.Discard(8)
			if _, err := raw.Write([]byte{'N'}); err != nil {
				return
			}
			continue // SSLRequest or a plaintext startup follows
		case firstBytesCancelRequest:
			// libpq before 17 and pgx send cancels in plaintext, outside
			// TLS; the key, which only the session's client has, is the
			// authentication, as in Postgres.
			s.cancelPostgres(ctx, raw, br, source)
			return
		case firstBytesPostgresStartup:
			s.refusePostgresPlaintext(raw)
			s.refuse(ctx, raw, source, "", "plaintext postgres", "Postern requires TLS: connect with sslmode=verify-full or through postern connect")
			return
		default:
			s.refuse(ctx, raw, source, "", "unrecognised protocol", fmt.Sprintf("first bytes %x are neither TLS nor a Postgres SSLRequest", head))
			return
		}
	}

	var hello helloInfo
	tconn := tls.Server(conn, &tls.Config{GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
		hello = helloInfo{sni: h.ServerName, alpn: h.SupportedProtos}
		return s.configForClient(h)
	}})
	hctx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	err := tconn.HandshakeContext(hctx)
	timedOut := hctx.Err() != nil
	cancel()
	if err != nil {
		service, _ := s.serviceFromSNI(hello.sni)
		s.refuse(ctx, raw, source, service, "TLS handshake failed", describeHandshakeErr(err, timedOut))
		return
	}
	raw.SetDeadline(time.Time{})

	state := tconn.ConnectionState()
	switch {
	case state.NegotiatedProtocol == tunnel.ALPN:
		sess, err := tlsmux.Server(ctx, tconn, s.cfg.Tunnel)
		if err != nil {
			s.log.Warn("starting tunnel session", "remote", source, "err", err)
			tconn.Close()
			return
		}
		s.serveAgent(ctx, sess)
	case s.isAPIName(hello.sni) || slices.Contains(hello.alpn, enroll.ALPN):
		s.apiLn.push(tconn)
	default:
		service, _ := s.serviceFromSNI(hello.sni)
		s.serveClient(ctx, tconn, source, service)
	}
}

type helloInfo struct {
	sni  string
	alpn []string
}

func describeReadErr(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return "handshake timeout: the client sent nothing"
	}
	if errors.Is(err, io.EOF) {
		return "client closed the connection before speaking"
	}
	return err.Error()
}

func describeHandshakeErr(err error, timedOut bool) string {
	var ne net.Error
	switch {
	case timedOut || (errors.As(err, &ne) && ne.Timeout()):
		return "handshake timeout: " + err.Error()
	case strings.Contains(err.Error(), "didn't provide a certificate"):
		return "no client certificate: present your SVID"
	}
	return err.Error()
}

// refusePostgresPlaintext answers a plaintext StartupMessage the way a
// Postgres server refuses a connection, so psql prints a clear reason.
func (s *Server) refusePostgresPlaintext(conn net.Conn) {
	buf, err := (&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: "28000",
		Message: "Postern requires TLS: use sslmode=verify-full with your SVID, or postern connect"}).Encode(nil)
	if err == nil {
		conn.Write(buf)
	}
}

func (s *Server) isAPIName(sni string) bool {
	return sni == "" || strings.EqualFold(sni, s.cfg.PublicName)
}

// serviceFromSNI returns the service a client names with SNI SERVICE.PUBLIC_NAME.
func (s *Server) serviceFromSNI(sni string) (string, bool) {
	suffix := "." + s.cfg.PublicName
	if len(sni) <= len(suffix) || !strings.EqualFold(sni[len(sni)-len(suffix):], suffix) {
		return "", false
	}
	name := strings.ToLower(sni[:len(sni)-len(suffix)])
	if strings.Contains(name, ".") {
		return "", false
	}
	return name, true
}

// configForClient picks the TLS configuration for one handshake: the tunnel
// for agents (ALPN postern-tunnel/1), the API for the bare public name, and
// client access for SERVICE.PUBLIC_NAME.
func (s *Server) configForClient(h *tls.ClientHelloInfo) (*tls.Config, error) {
	if slices.Contains(h.SupportedProtos, tunnel.ALPN) {
		return s.tunnelTLSConfig(), nil
	}
	if s.isAPIName(h.ServerName) || slices.Contains(h.SupportedProtos, enroll.ALPN) {
		return s.apiTLSConfig(), nil
	}
	service, ok := s.serviceFromSNI(h.ServerName)
	if !ok {
		return nil, fmt.Errorf("unknown server name %q: services are reached as SERVICE.%s", h.ServerName, s.cfg.PublicName)
	}
	return s.clientTLSConfig(service), nil
}

// tunnelTLSConfig accepts only agents of our trust domain.
func (s *Server) tunnelTLSConfig() *tls.Config {
	c := tlsconfig.MTLSServerConfig(s.svid, s.data.CA.Bundle(), tlsconfig.AdaptMatcher(s.matchKind("agent")))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{tunnel.ALPN}
	return c
}

// apiTLSConfig serves the gateway's HTTPS API: a client certificate is
// optional (enrollment has none) and verified when given.
func (s *Server) apiTLSConfig() *tls.Config {
	pool := x509.NewCertPool()
	for _, r := range s.data.CA.Roots() {
		pool.AddCert(r)
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.tlsCertificate,
		ClientAuth:     tls.VerifyClientCertIfGiven,
		ClientCAs:      pool,
		NextProtos:     []string{"http/1.1"},
	}
}

// clientTLSConfig requires a client SVID of our trust domain that belongs to
// a user or a workload (an agent's or the gateway's own SVID is refused);
// for HTTP and gRPC services the SVID is optional (bearer tokens instead).
func (s *Server) clientTLSConfig(service string) *tls.Config {
	proto, _ := s.reg.protocol(service)
	// HTTP and gRPC clients may instead authenticate each request with a
	// bearer token; a certificate they do present must be a valid SVID.
	optional := proto == protocols.HTTP || proto == protocols.GRPC
	auth := tls.RequireAnyClientCert
	if optional {
		auth = tls.RequestClientCert
	}
	c := &tls.Config{
		MinVersion:     tls.VersionTLS12,
		GetCertificate: s.tlsCertificate,
		ClientAuth:     auth,
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			if len(raw) == 0 {
				if optional {
					return nil
				}
				return errors.New("no client certificate: present your SVID")
			}
			// Many TLS clients (openssl s_client -cert, leaf-only keystores)
			// send the leaf without its intermediate; the gateway knows its
			// own intermediate and completes the chain itself.
			chain := append(slices.Clip(raw), s.data.CA.Intermediate().Raw)
			id, _, err := x509svid.ParseAndVerify(chain, s.data.CA.Bundle())
			if err != nil {
				return fmt.Errorf("verifying client SVID: %w", err)
			}
			return s.matchKind("user", "workload")(id)
		},
	}
	// Keep ALPN where the service's protocol needs it (libpq's direct TLS
	// insists on "postgresql"); a plain TCP service ignores it.
	c.NextProtos = alpnFor(proto)
	return c
}

func alpnFor(proto string) []string {
	switch proto {
	case protocols.Postgres:
		return []string{"postgresql"}
	case protocols.HTTP:
		return []string{"h2", "http/1.1"}
	case protocols.GRPC:
		return []string{"h2"}
	}
	return nil
}

// matchKind returns a matcher that accepts SVIDs of our trust domain whose
// path starts with one of the given kinds (/agent/, /user/…).
func (s *Server) matchKind(kinds ...string) spiffeid.Matcher {
	td := s.data.CA.TrustDomain()
	return func(id spiffeid.ID) error {
		if id.TrustDomain() != td {
			return fmt.Errorf("SVID %s is of trust domain %q, not %q", id, id.TrustDomain().Name(), td.Name())
		}
		for _, k := range kinds {
			if pki.Kind(id) == k {
				return nil
			}
		}
		return fmt.Errorf("SVID %s may not be used here: only %s identities are accepted", id, strings.Join(kinds, " or "))
	}
}

// peekedConn reads through the buffered reader that peeked at the first bytes.
type peekedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *peekedConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// connListener hands connections that finished their handshake to an
// http.Server.
type connListener struct {
	addr net.Addr
	ch   chan net.Conn
	once sync.Once
	done chan struct{}
}

func newConnListener(addr net.Addr) *connListener {
	return &connListener{addr: addr, ch: make(chan net.Conn), done: make(chan struct{})}
}

func (l *connListener) push(c net.Conn) {
	select {
	case l.ch <- c:
	case <-l.done:
		c.Close()
	}
}

func (l *connListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.ch:
		return c, nil
	case <-l.done:
		return nil, net.ErrClosed
	}
}

func (l *connListener) Close() error {
	l.once.Do(func() { close(l.done) })
	return nil
}

func (l *connListener) Addr() net.Addr { return l.addr }
