package tunnel_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/quic"
	"github.com/postern/postern/protocols/tunnel/tlsmux"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("postern.local")
	gatewayID = spiffeid.RequireFromPath(td, "/gateway/gw")
	agentID   = spiffeid.RequireFromPath(td, "/agent/a1")
)

// listener is what both transports' listeners offer.
type listener interface {
	Accept(ctx context.Context) (tunnel.Session, error)
	Addr() net.Addr
	Close() error
}

// transport is one implementation of the tunnel under test.
type transport struct {
	name    string
	network string // of its listener, for the relay
	listen  func(addr string, conf *tls.Config, cfg *tunnel.Config) (listener, error)
	dial    func(ctx context.Context, addr string, conf *tls.Config, cfg *tunnel.Config) (tunnel.Session, error)
}

var transports = []transport{
	{
		name:    tunnel.QUIC,
		network: "udp",
		listen: func(addr string, conf *tls.Config, cfg *tunnel.Config) (listener, error) {
			l, err := quic.Listen(addr, conf, cfg)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		dial: quic.Dial,
	},
	{
		name:    tunnel.TLS,
		network: "tcp",
		listen: func(addr string, conf *tls.Config, cfg *tunnel.Config) (listener, error) {
			l, err := tlsmux.Listen(addr, conf, cfg)
			if err != nil {
				return nil, err
			}
			return l, nil
		},
		dial: tlsmux.Dial,
	},
}

// fixture is a trust domain with a gateway and an agent SVID.
type fixture struct {
	ca      *pkitest.CA
	gateway *x509svid.SVID
	agent   *x509svid.SVID
}

func newFixture(t testing.TB) *fixture {
	t.Helper()
	ca := pkitest.NewCA(t, td)
	return &fixture{ca: ca, gateway: ca.SVID(t, gatewayID), agent: ca.SVID(t, agentID)}
}

// serverTLS is the gateway's side: it accepts agents of td only.
func serverTLS(svid *x509svid.SVID, bundle x509bundle.Source) *tls.Config {
	c := tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeIDPrefix(spiffeid.RequireFromPath(td, "/agent")))
	c.NextProtos = []string{tunnel.ALPN}
	return c
}

// clientTLS is the agent's side: it accepts gateways of td only.
func clientTLS(svid *x509svid.SVID, bundle x509bundle.Source) *tls.Config {
	c := tlsconfig.MTLSClientConfig(svid, bundle, tlsconfig.AuthorizeIDPrefix(spiffeid.RequireFromPath(td, "/gateway")))
	c.NextProtos = []string{tunnel.ALPN}
	return c
}

// testConfig gives handshakes more time than in production: on a loaded
// machine under the race detector a handshake can take seconds.
func testConfig(cfg *tunnel.Config) *tunnel.Config {
	c := cfg.WithDefaults()
	if cfg == nil || cfg.HandshakeTimeout == 0 {
		c.HandshakeTimeout = setupTimeout
	}
	return &c
}

// setupTimeout bounds making a session in tests.
const setupTimeout = 60 * time.Second

// listen starts a gateway-side listener on loopback, closed at cleanup.
func listen(t testing.TB, tr transport, f *fixture, cfg *tunnel.Config) listener {
	t.Helper()
	ln, err := tr.listen("127.0.0.1:0", serverTLS(f.gateway, f.ca.Bundle()), testConfig(cfg))
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	return ln
}

// connect dials addr as the agent and accepts the session on ln. Both
// sessions are closed at cleanup.
func connect(t testing.TB, tr transport, f *fixture, ln listener, addr string, cfg *tunnel.Config) (client, server tunnel.Session) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
	defer cancel()
	type result struct {
		s   tunnel.Session
		err error
	}
	accepted := make(chan result, 1)
	go func() {
		s, err := ln.Accept(ctx)
		accepted <- result{s, err}
	}()
	client, err := tr.dial(ctx, addr, clientTLS(f.agent, f.ca.Bundle()), testConfig(cfg))
	if err != nil {
		t.Fatalf("dialing: %v", err)
	}
	t.Cleanup(func() { _ = client.Close() })
	r := <-accepted
	if r.err != nil {
		t.Fatalf("accepting: %v", r.err)
	}
	t.Cleanup(func() { _ = r.s.Close() })
	return client, r.s
}

// pair makes a listener and one connected session pair.
func pair(t testing.TB, tr transport, cfg *tunnel.Config) (client, server tunnel.Session) {
	t.Helper()
	f := newFixture(t)
	ln := listen(t, tr, f, cfg)
	return connect(t, tr, f, ln, ln.Addr().String(), cfg)
}

// serve accepts streams on s and runs handle on each in its own goroutine
// until the session ends. It waits for the handlers at cleanup.
func serve(t testing.TB, s tunnel.Session, handle func(net.Conn)) {
	var wg sync.WaitGroup
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			st, err := s.AcceptStream(ctx)
			if err != nil {
				return
			}
			wg.Go(func() {
				defer st.Close()
				handle(st)
			})
		}
	})
}

// echo copies a stream back to its opener, then half-closes it.
func echo(st net.Conn) {
	buf := make([]byte, 64<<10)
	_, _ = io.CopyBuffer(st, onlyReader{st}, buf)
	_ = st.(tunnel.CloseWriter).CloseWrite()
}

// onlyReader hides WriterTo and the like, so io.CopyBuffer uses its buffer.
type onlyReader struct{ io.Reader }

// onlyWriter hides ReaderFrom, so io.CopyBuffer uses its buffer.
type onlyWriter struct{ io.Writer }

// waitClosed waits for ch to close, failing the test after timeout.
func waitClosed(t testing.TB, ch <-chan struct{}, timeout time.Duration, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(timeout):
		t.Fatalf("%s: still open after %v", what, timeout)
	}
}

func isClosed(ch <-chan struct{}) bool {
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// relay forwards one transport's traffic between a client and a listener
// and can turn into a black hole, which to both ends looks like a peer that
// died without a word.
type relay struct {
	dropping atomic.Bool
	closers  []io.Closer
	mu       sync.Mutex
	addr     net.Addr
	wg       sync.WaitGroup
}

func newRelay(t testing.TB, network, target string) *relay {
	t.Helper()
	r := &relay{}
	switch network {
	case "udp":
		r.startUDP(t, target)
	case "tcp":
		r.startTCP(t, target)
	default:
		t.Fatalf("relay: unknown network %q", network)
	}
	t.Cleanup(r.close)
	return r
}

func (r *relay) Addr() net.Addr { return r.addr }

// blackhole drops everything from now on.
func (r *relay) blackhole() { r.dropping.Store(true) }

func (r *relay) keep(c io.Closer) {
	r.mu.Lock()
	r.closers = append(r.closers, c)
	r.mu.Unlock()
}

func (r *relay) close() {
	r.mu.Lock()
	for _, c := range r.closers {
		_ = c.Close()
	}
	r.mu.Unlock()
	r.wg.Wait()
}

func (r *relay) startUDP(t testing.TB, target string) {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	raddr, err := net.ResolveUDPAddr("udp", target)
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	back, err := net.DialUDP("udp", nil, raddr)
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	r.keep(front)
	r.keep(back)
	r.addr = front.LocalAddr()
	var client atomic.Pointer[net.UDPAddr]
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := front.ReadFromUDP(buf)
			if err != nil {
				return
			}
			client.Store(from)
			if !r.dropping.Load() {
				_, _ = back.Write(buf[:n])
			}
		}
	})
	r.wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, err := back.Read(buf)
			if err != nil {
				if errors.Is(err, net.ErrClosed) {
					return
				}
				continue // e.g. ICMP port unreachable
			}
			if to := client.Load(); to != nil && !r.dropping.Load() {
				_, _ = front.WriteToUDP(buf[:n], to)
			}
		}
	})
}

func (r *relay) startTCP(t testing.TB, target string) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("relay: %v", err)
	}
	r.keep(ln)
	r.addr = ln.Addr()
	r.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				_ = c.Close()
				continue
			}
			r.keep(c)
			r.keep(u)
			r.wg.Go(func() { r.pump(u, c) })
			r.wg.Go(func() { r.pump(c, u) })
		}
	})
}

func (r *relay) pump(dst, src net.Conn) {
	buf := make([]byte, 64<<10)
	for {
		n, err := src.Read(buf)
		if err != nil {
			_ = dst.Close()
			return
		}
		if !r.dropping.Load() {
			if _, err := dst.Write(buf[:n]); err != nil {
				return
			}
		}
	}
}

// loopbackPair returns both ends of a loopback TCP connection.
func loopbackPair(t testing.TB) (net.Conn, net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	s := <-accepted
	if s == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { c.Close(); s.Close() })
	return c, s
}
