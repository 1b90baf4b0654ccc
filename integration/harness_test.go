package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
)

var td = spiffeid.RequireTrustDomainFromString("postern.local")

// basePolicy lets group ops reach every service and alice reach echo.
const basePolicy = `rules:
  - name: ops-all
    identities: [group:ops]
    services: ["*"]
  - name: alice-echo
    identities: [spiffe://postern.local/user/alice]
    services: [echo]
`

// logBuffer is a concurrency-safe log sink that tests can search.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor polls cond until it is true or the deadline passes.
func waitFor(t testing.TB, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if cond() {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s: not within %s", what, within)
}

type gw struct {
	srv    *gateway.Server
	cfg    gateway.Config
	logs   *logBuffer
	cancel context.CancelFunc
	done   chan error
}

func (g *gw) addr() string { return g.srv.Addr().String() }

// writePolicy replaces the gateway's policy file by rename, the way editors
// and config managers do.
func (g *gw) writePolicy(t testing.TB, text string) {
	t.Helper()
	tmp := g.cfg.PolicyPath + ".new"
	if err := os.WriteFile(tmp, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, g.cfg.PolicyPath); err != nil {
		t.Fatal(err)
	}
}

func (g *gw) stop(t testing.TB) {
	t.Helper()
	g.cancel()
	select {
	case <-g.done:
	case <-time.After(20 * time.Second):
		t.Fatal("gateway did not stop within 20s")
	}
}

type gwOption func(*gateway.Config)

// startGateway runs a gateway in process on a free loopback port with the
// given policy text, and stops it at the end of the test.
func startGateway(t testing.TB, policyText string, opts ...gwOption) *gw {
	t.Helper()
	dir := t.TempDir()
	policyPath := filepath.Join(dir, "policy.yaml")
	if err := os.WriteFile(policyPath, []byte(policyText), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := gateway.Config{
		DataDir:          filepath.Join(dir, "data"),
		Listen:           "127.0.0.1:0",
		OpsListen:        "127.0.0.1:0",
		PolicyPath:       policyPath,
		HandshakeTimeout: 3 * time.Second,
		Heartbeat:        time.Second,
	}
	for _, o := range opts {
		o(&cfg)
	}
	return runGateway(t, cfg)
}

// logLevel is what the gateway and agent of a test log: everything for
// tests, and for benchmarks what production logs (info), so that a figure
// does not include a debug line per request.
func logLevel(t testing.TB) slog.Level {
	if _, ok := t.(*testing.B); ok {
		return slog.LevelInfo
	}
	return slog.LevelDebug
}

func runGateway(t testing.TB, cfg gateway.Config) *gw {
	t.Helper()
	logs := &logBuffer{}
	cfg.Logger = slog.New(slog.NewTextHandler(io.MultiWriter(logs, testLog(t, "gateway")), &slog.HandlerOptions{Level: logLevel(t)}))
	srv, err := gateway.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting gateway: %v", err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatalf("listening: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	g := &gw{srv: srv, cfg: cfg, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() {
		srv.Run(ctx)
		close(g.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-g.done
	})
	return g
}

// testLog is where a component's log goes in t: to t.Log line by line with
// -v; otherwise its last logTail bytes are kept and printed only if t
// fails, so that a failure in CI comes with what the gateway and the agents
// said before it.
func testLog(t testing.TB, component string) io.Writer {
	if testing.Verbose() {
		return testWriter{t}
	}
	w := &tailBuffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s's log (its last %d KiB at most):\n%s", component, logTail>>10, w.String())
		}
	})
	return w
}

// logTail is how much of a component's log a failed test prints.
const logTail = 32 << 10

// testWriter sends log lines to t.Log.
type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// tailBuffer keeps the last logTail bytes written to it, or a little more.
type tailBuffer struct{ logBuffer }

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len()+len(p) > 2*logTail {
		b.buf.Next(b.buf.Len() - logTail)
	}
	return b.buf.Write(p)
}

type ag struct {
	a      *agent.Agent
	cancel context.CancelFunc
	done   chan error
}

func (a *ag) stop() {
	a.cancel()
	<-a.done
}

// startAgent enrolls (when dir holds no SVID) and runs an agent.
func startAgent(t testing.TB, g *gw, name, transport, dir string, services ...agent.Service) *ag {
	t.Helper()
	token := ""
	if _, _, err := pki.ReadFiles(dir); err != nil {
		tok, _, err := g.srv.Data().MintToken(name, 0)
		if err != nil {
			t.Fatalf("minting token: %v", err)
		}
		token = tok
	}
	return runAgent(t, agent.Config{Gateway: g.addr(), Name: name, Token: token, DataDir: dir,
		Transport: transport, Services: services, Heartbeat: time.Second, MaxBackoff: 2 * time.Second})
}

func runAgent(t testing.TB, cfg agent.Config) *ag {
	t.Helper()
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(testLog(t, "agent "+cfg.Name), &slog.HandlerOptions{Level: logLevel(t)}))
	}
	if cfg.DrainTimeout == 0 {
		// Agents leave at once when a test ends, whatever its clients
		// still hold open; TestAgentDrain drains.
		cfg.DrainTimeout = -1
	}
	a, err := agent.New(context.Background(), cfg)
	if err != nil {
		t.Fatalf("starting agent: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &ag{a: a, cancel: cancel, done: make(chan error, 1)}
	go func() {
		a.Run(ctx)
		close(r.done)
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

// waitConnected waits for the agent's next tunnel and returns its transport.
func (a *ag) waitConnected(t testing.TB) string {
	t.Helper()
	select {
	case tr := <-a.a.Connected():
		return tr
	case <-time.After(15 * time.Second):
		t.Fatal("agent did not connect within 15s")
		return ""
	}
}

// serveTCP runs a TCP service on a free loopback port that hands each
// connection to handle (which need not close it), until the test ends.
func serveTCP(t testing.TB, handle func(c net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c)
			}()
		}
	}()
	return ln.Addr().String()
}

// startEcho runs a TCP echo service that closes its write side after the
// client's EOF (so half-close is observable).
func startEcho(t testing.TB) string {
	t.Helper()
	return serveTCP(t, func(c net.Conn) {
		io.Copy(c, c)
		c.(*net.TCPConn).CloseWrite()
	})
}

// closedAddr returns a loopback address that nothing listens on.
func closedAddr(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func echoService(addr string) agent.Service {
	return agent.Service{Name: "echo", Protocol: "tcp", Address: addr}
}

// issue makes a user or workload SVID from the gateway's CA.
func issue(t testing.TB, g *gw, id string, groups ...string) *x509svid.SVID {
	t.Helper()
	svid, err := g.srv.Data().Issue(context.Background(), pki.IssueRequest{ID: spiffeid.RequireFromString(id), Groups: groups})
	if err != nil {
		t.Fatalf("issuing %s: %v", id, err)
	}
	return svid
}

func (g *gw) roots() *x509.CertPool {
	pool := x509.NewCertPool()
	for _, r := range g.srv.Data().CA.Roots() {
		pool.AddCert(r)
	}
	return pool
}

// dialService opens a client TLS connection to service with svid (nil: no
// client certificate) and completes the handshake.
func dialService(g *gw, service string, svid *x509svid.SVID) (*tls.Conn, error) {
	conf := &tls.Config{ServerName: service + ".localhost", RootCAs: g.roots()}
	if svid != nil {
		conf.Certificates = []tls.Certificate{pkitest.TLSCertificate(svid)}
	}
	d := &net.Dialer{Timeout: 5 * time.Second}
	c, err := tls.DialWithDialer(d, "tcp", g.addr(), conf)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// echoOnce sends a line through the service and expects it back. With TLS
// 1.3 a refused client certificate shows only at the first read, so this is
// the check that a client really got through.
func echoOnce(g *gw, service string, svid *x509svid.SVID) error {
	c, err := dialService(g, service, svid)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	msg := []byte("hello through postern\n")
	if _, err := c.Write(msg); err != nil {
		return err
	}
	got := make([]byte, len(msg))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if !bytes.Equal(got, msg) {
		return fmt.Errorf("got %q, want %q", got, msg)
	}
	return nil
}

var transports = []string{tunnel.QUIC, tunnel.TLS}
