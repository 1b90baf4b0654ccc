package connect

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tcp"
)

const postgresAddr = "127.0.0.1:5432"

// fixture is a CA, a caller's identity on disk and the gateway's
// certificate, all made for one test.
type fixture struct {
	ca      *pkitest.CA
	dir     string
	gwCert  tls.Certificate
	service string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("postern.test")
	ca := pkitest.NewCA(t, td)
	dir := t.TempDir()
	user := ca.SVID(t, spiffeid.RequireFromPath(td, "/user/alice"))
	if err := pki.WriteFiles(dir, user, ca.Roots()); err != nil {
		t.Fatal(err)
	}
	gw := ca.SVID(t, spiffeid.RequireFromPath(td, "/gateway/test"), pkitest.DNSNames("localhost", "*.localhost"))
	return &fixture{ca: ca, dir: dir, gwCert: pkitest.TLSCertificate(gw), service: "pg"}
}

// gateway stands in for the gateway's client port: real TLS on loopback,
// requiring the caller's SVID, offering nextProtos, and handing each
// connection after the handshake to handle.
func (f *fixture) gateway(t *testing.T, nextProtos []string, handle func(c *tls.Conn)) string {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{f.gwCert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    f.ca.Pool(),
		NextProtos:   nextProtos,
		MinVersion:   tls.VersionTLS12,
	})
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				tc := c.(*tls.Conn)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if err := tc.Handshake(); err != nil {
					t.Errorf("gateway handshake: %v", err)
					return
				}
				c.SetDeadline(time.Time{})
				if got, want := tc.ConnectionState().ServerName, f.service+".localhost"; got != want {
					t.Errorf("got SNI %q, want %q", got, want)
				}
				handle(tc)
			}()
		}
	}()
	return ln.Addr().String()
}

// proxy runs a Proxy to gwAddr on a local loopback port until the test
// ends, and returns that port's address.
func (f *fixture) proxy(t *testing.T, gwAddr string) string {
	t.Helper()
	p := &Proxy{Service: f.service, Gateway: gwAddr, IdentityDir: f.dir, StartupTimeout: 5 * time.Second,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	if err := p.Check(); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// checkGoroutines fails the test when it leaves goroutines behind. Call it
// first, so that its cleanup runs after every other.
func checkGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		if after := runtime.NumGoroutine(); after > before {
			buf := make([]byte, 1<<20)
			t.Errorf("got %d goroutines, want at most %d:\n%s", after, before, buf[:runtime.Stack(buf, true)])
		}
	})
}

// readFrame reads one untyped startup frame, as the gateway does inside TLS.
func readFrame(r io.Reader) ([]byte, error) {
	var lb [4]byte
	if _, err := io.ReadFull(r, lb[:]); err != nil {
		return nil, err
	}
	n := binary.BigEndian.Uint32(lb[:])
	if n < 8 || n > 10000 {
		return nil, errors.New("bad startup length")
	}
	frame := append(lb[:], make([]byte, n-4)...)
	_, err := io.ReadFull(r, frame[4:])
	return frame, err
}

// decodeFrame decodes a startup frame with pgproto3's own reader.
func decodeFrame(frame []byte) (pgproto3.FrontendMessage, error) {
	return pgproto3.NewBackend(bytes.NewReader(frame), io.Discard).ReceiveStartupMessage()
}

// spliceToPostgres is a gateway handler that reads the first message inside
// TLS and passes it, and then the rest of the connection, to the real
// PostgreSQL over plain TCP. Each first message's kind goes to seen.
func spliceToPostgres(t *testing.T, seen chan<- string) func(c *tls.Conn) {
	return func(c *tls.Conn) {
		if got := c.ConnectionState().NegotiatedProtocol; got != alpnPostgres {
			t.Errorf("got ALPN %q, want %q", got, alpnPostgres)
		}
		frame, err := readFrame(c)
		if errors.Is(err, io.EOF) {
			return // closed before any message, as after a refused sslmode=require
		}
		if err != nil {
			t.Errorf("reading startup inside TLS: %v", err)
			return
		}
		msg, err := decodeFrame(frame)
		if err != nil {
			t.Errorf("decoding startup inside TLS: %v", err)
			return
		}
		switch m := msg.(type) {
		case *pgproto3.StartupMessage:
			seen <- "startup user=" + m.Parameters["user"]
		case *pgproto3.CancelRequest:
			seen <- "cancel"
		default:
			t.Errorf("got %T inside TLS, want a StartupMessage or CancelRequest", msg)
			return
		}
		pg, err := net.Dial("tcp", postgresAddr)
		if err != nil {
			t.Errorf("dialing postgres: %v", err)
			return
		}
		if _, err := pg.Write(frame); err != nil {
			t.Errorf("writing to postgres: %v", err)
			pg.Close()
			return
		}
		(&tcp.Relay{}).Run(context.Background(), c, pg)
	}
}

func requirePostgres(t *testing.T) string {
	t.Helper()
	psql, err := exec.LookPath("psql")
	if err != nil {
		t.Skip("psql not installed")
	}
	c, err := net.DialTimeout("tcp", postgresAddr, time.Second)
	if err != nil {
		t.Skipf("no PostgreSQL at %s: %v", postgresAddr, err)
	}
	c.Close()
	return psql
}

func TestPsqlThroughConnect(t *testing.T) {
	psql := requirePostgres(t)
	checkGoroutines(t)
	f := newFixture(t)
	seen := make(chan string, 16)
	local := f.proxy(t, f.gateway(t, []string{alpnPostgres}, spliceToPostgres(t, seen)))
	host, port, _ := net.SplitHostPort(local)

	tests := map[string]struct {
		sslmode string
		wantOut string
		wantErr string // in psql's output, when it must fail
	}{
		"sslmode=disable": {sslmode: "disable", wantOut: "1"},
		"sslmode=prefer":  {sslmode: "prefer", wantOut: "1"},
		"sslmode=allow":   {sslmode: "allow", wantOut: "1"},
		"sslmode=require": {sslmode: "require", wantErr: "server does not support SSL"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			conninfo := "host=" + host + " port=" + port + " user=postgres dbname=postgres connect_timeout=10 sslmode=" + tc.sslmode
			cmd := exec.CommandContext(ctx, psql, conninfo, "-XAtc", "select 1")
			cmd.Env = append(os.Environ(), "PGPASSWORD=", "PGSSLMODE=", "PGOPTIONS=")
			out, err := cmd.CombinedOutput()
			got := strings.TrimSpace(string(out))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(got, tc.wantErr) {
					t.Fatalf("got %q, %v; want a failure containing %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.wantOut {
				t.Fatalf("got %q, %v; want %q", got, err, tc.wantOut)
			}
			select {
			case s := <-seen:
				if s != "startup user=postgres" {
					t.Fatalf("gateway got %q, want %q", s, "startup user=postgres")
				}
			default:
				t.Fatal("gateway saw no startup message")
			}
		})
	}
}

// TestCancelThroughConnect cancels a running query the way drivers do: a
// new local connection carrying a plaintext CancelRequest.
func TestCancelThroughConnect(t *testing.T) {
	requirePostgres(t)
	checkGoroutines(t)
	f := newFixture(t)
	seen := make(chan string, 64)
	local := f.proxy(t, f.gateway(t, []string{alpnPostgres}, spliceToPostgres(t, seen)))
	host, port, _ := net.SplitHostPort(local)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	conn, err := pgconn.Connect(ctx, "host="+host+" port="+port+" user=postgres dbname=postgres sslmode=disable")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())

	done := make(chan error, 1)
	go func() {
		_, err := conn.Exec(ctx, "select pg_sleep(20)").ReadAll()
		done <- err
	}()
	// The cancel may reach the server before the query starts; send it
	// until the query ends.
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	var qerr error
wait:
	for {
		select {
		case qerr = <-done:
			break wait
		case <-tick.C:
			if err := conn.CancelRequest(ctx); err != nil {
				t.Fatalf("cancel request: %v", err)
			}
		}
	}
	var pe *pgconn.PgError
	if !errors.As(qerr, &pe) || pe.Code != "57014" {
		t.Fatalf("got %v, want SQLSTATE 57014 (query_canceled)", qerr)
	}
	var cancels int
	for len(seen) > 0 {
		if <-seen == "cancel" {
			cancels++
		}
	}
	if cancels == 0 {
		t.Fatal("gateway saw no CancelRequest")
	}
}

// recording is a gateway handler that records what arrives inside TLS
// until the client's close_notify.
func recording(got chan<- []byte) func(c *tls.Conn) {
	return func(c *tls.Conn) {
		b, _ := io.ReadAll(c)
		got <- b
	}
}

func startup(params ...string) []byte {
	m := &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30, Parameters: map[string]string{}}
	for i := 0; i+1 < len(params); i += 2 {
		m.Parameters[params[i]] = params[i+1]
	}
	b, _ := m.Encode(nil)
	return b
}

func encode(m interface{ Encode([]byte) ([]byte, error) }) []byte {
	b, err := m.Encode(nil)
	if err != nil {
		panic(err)
	}
	return b
}

func cat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

// frameOf builds an untyped frame with the given body.
func frameOf(body []byte) []byte {
	b := binary.BigEndian.AppendUint32(nil, uint32(4+len(body)))
	return append(b, body...)
}

func TestPostgresFirstMessages(t *testing.T) {
	checkGoroutines(t)
	sslRequest := encode(&pgproto3.SSLRequest{})
	gssRequest := encode(&pgproto3.GSSEncRequest{})
	start := startup("user", "alice", "database", "app")
	query := encode(&pgproto3.Query{String: "select 1"})
	cancel := encode(&pgproto3.CancelRequest{ProcessID: 4242, SecretKey: []byte{1, 2, 3, 4}})
	startup32 := frameOf(cat(binary.BigEndian.AppendUint32(nil, pgproto3.ProtocolVersion32), []byte("user\x00alice\x00\x00")))
	startup39 := frameOf(cat(binary.BigEndian.AppendUint32(nil, 3<<16|9), []byte("user\x00alice\x00_pq_.x\x001\x00\x00")))

	tests := map[string]struct {
		send        []byte
		wantReply   string // what the local client reads, before any error
		wantGateway []byte // what arrives inside TLS
		wantErrCode string // an ErrorResponse's code after wantReply
	}{
		"startup":                      {send: start, wantGateway: start},
		"startup then pipelined query": {send: cat(start, query), wantGateway: cat(start, query)},
		"SSLRequest then startup":      {send: cat(sslRequest, start), wantReply: "N", wantGateway: start},
		"GSSENC, SSL, startup, query":  {send: cat(gssRequest, sslRequest, start, query), wantReply: "NN", wantGateway: cat(start, query)},
		"protocol 3.2 startup":         {send: startup32, wantGateway: startup32},
		"protocol 3.9 startup":         {send: startup39, wantGateway: startup39},
		"cancel":                       {send: cancel, wantGateway: cancel},
		"SSLRequest then cancel":       {send: cat(sslRequest, cancel), wantReply: "N", wantGateway: cancel},
		"SSLRequest twice":             {send: cat(sslRequest, sslRequest, start), wantReply: "N", wantErrCode: "08P01"},
		"GSSENCRequest twice":          {send: cat(gssRequest, gssRequest), wantReply: "N", wantErrCode: "08P01"},
		"longer than 10000 bytes":      {send: startup("user", "alice", "options", strings.Repeat("x", 10000)), wantErrCode: "08P01"},
		"length below 8":               {send: []byte{0, 0, 0, 4}, wantErrCode: "08P01"},
		"protocol 2.0":                 {send: frameOf(cat(binary.BigEndian.AppendUint32(nil, 2<<16), []byte("user\x00alice\x00\x00"))), wantErrCode: "08P01"},
		"unknown request code":         {send: frameOf(binary.BigEndian.AppendUint32(nil, 1234<<16|5555)), wantErrCode: "08P01"},
		"parameters not terminated":    {send: frameOf(cat(binary.BigEndian.AppendUint32(nil, pgproto3.ProtocolVersion30), []byte("user\x00alice"))), wantErrCode: "08P01"},
		"SSLRequest of length 12":      {send: frameOf(cat(sslRequest[4:], []byte{0, 0, 0, 0})), wantErrCode: "08P01"},
		"cancel too short":             {send: frameOf(cat(cancel[4:8], []byte{0, 0})), wantErrCode: "08P01"},
		"direct TLS from the client":   {send: []byte{0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc}, wantErrCode: "08P01"},
		"HTTP request":                 {send: []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"), wantErrCode: "08P01"},
		"truncated startup":            {send: start[:len(start)-3]},
		"nothing":                      {},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			got := make(chan []byte, 1)
			local := f.proxy(t, f.gateway(t, []string{alpnPostgres}, recording(got)))
			c, err := net.Dial("tcp", local)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(tc.send); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			reply, err := io.ReadAll(c)
			if err != nil {
				t.Fatalf("reading the reply: %v", err)
			}
			if !bytes.HasPrefix(reply, []byte(tc.wantReply)) {
				t.Fatalf("got reply %q, want it to start with %q", reply, tc.wantReply)
			}
			rest := reply[len(tc.wantReply):]
			if tc.wantErrCode != "" {
				msg, err := pgproto3.NewFrontend(bytes.NewReader(rest), io.Discard).Receive()
				e, ok := msg.(*pgproto3.ErrorResponse)
				if err != nil || !ok || e.Severity != "FATAL" || e.Code != tc.wantErrCode {
					t.Fatalf("got %#v, %v after the reply; want a FATAL ErrorResponse %s", msg, err, tc.wantErrCode)
				}
			} else if len(rest) > 0 {
				t.Fatalf("got reply %q, want %q", reply, tc.wantReply)
			}
			select {
			case b := <-got:
				if !bytes.Equal(b, tc.wantGateway) {
					t.Fatalf("gateway got %q, want %q", b, tc.wantGateway)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("gateway connection did not end")
			}
		})
	}
}

// TestCancelRequestInsideTLS checks the fields of a CancelRequest as the
// gateway decodes it, and that the client's connection ends only once the
// gateway has closed.
func TestCancelRequestInsideTLS(t *testing.T) {
	checkGoroutines(t)
	tests := map[string]struct {
		pid    uint32
		secret []byte
	}{
		"protocol 3.0 key": {pid: 4242, secret: []byte{0xde, 0xad, 0xbe, 0xef}},
		"protocol 3.2 key": {pid: 1, secret: bytes.Repeat([]byte{7}, 32)},
		"longest key":      {pid: 0x7fffffff, secret: bytes.Repeat([]byte{9}, 256)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			got := make(chan *pgproto3.CancelRequest, 1)
			release := make(chan struct{})
			local := f.proxy(t, f.gateway(t, []string{alpnPostgres}, func(c *tls.Conn) {
				frame, err := readFrame(c)
				if err != nil {
					t.Errorf("reading inside TLS: %v", err)
					return
				}
				msg, err := decodeFrame(frame)
				cr, ok := msg.(*pgproto3.CancelRequest)
				if err != nil || !ok {
					t.Errorf("got %T, %v inside TLS; want a CancelRequest", msg, err)
					return
				}
				got <- &pgproto3.CancelRequest{ProcessID: cr.ProcessID, SecretKey: bytes.Clone(cr.SecretKey)}
				// Nothing else may follow the cancel.
				if rest, err := io.ReadAll(c); len(rest) > 0 || err != nil {
					t.Errorf("got %q, %v after the cancel; want a clean end", rest, err)
				}
				<-release
			}))
			c, err := net.Dial("tcp", local)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if _, err := c.Write(encode(&pgproto3.CancelRequest{ProcessID: tc.pid, SecretKey: tc.secret})); err != nil {
				t.Fatal(err)
			}
			cr := <-got
			if cr.ProcessID != tc.pid || !bytes.Equal(cr.SecretKey, tc.secret) {
				t.Fatalf("got pid %d secret %x, want pid %d secret %x", cr.ProcessID, cr.SecretKey, tc.pid, tc.secret)
			}
			// The gateway holds the connection: the client's must stay open.
			c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
			if n, err := c.Read(make([]byte, 1)); !isTimeout(err) {
				t.Fatalf("got %d, %v before the gateway closed; want the connection held", n, err)
			}
			close(release)
			c.SetReadDeadline(time.Now().Add(10 * time.Second))
			if b, err := io.ReadAll(c); len(b) > 0 || err != nil {
				t.Fatalf("got %q, %v; want EOF and nothing else", b, err)
			}
		})
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// TestBlindRelay checks that services whose gateway TLS does not negotiate
// "postgresql" get bytes relayed untouched, even ones that look like
// Postgres, and that a server that speaks first is heard at once.
func TestBlindRelay(t *testing.T) {
	checkGoroutines(t)
	looksLikePostgres := cat(encode(&pgproto3.SSLRequest{}), startup("user", "alice"), []byte("hello"))
	tests := map[string]struct {
		nextProtos []string
		banner     string
	}{
		"tcp":               {},
		"tcp, server first": {banner: "SSH-2.0-test\r\n"},
		"http":              {nextProtos: []string{"h2", "http/1.1"}},
		"grpc":              {nextProtos: []string{"h2"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			local := f.proxy(t, f.gateway(t, tc.nextProtos, func(c *tls.Conn) {
				if tc.banner != "" {
					c.Write([]byte(tc.banner))
				}
				io.Copy(c, c)
			}))
			c, err := net.Dial("tcp", local)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			c.SetDeadline(time.Now().Add(10 * time.Second))
			if tc.banner != "" {
				b := make([]byte, len(tc.banner))
				if _, err := io.ReadFull(c, b); err != nil || string(b) != tc.banner {
					t.Fatalf("got banner %q, %v; want %q before the client sends", b, err, tc.banner)
				}
			}
			if _, err := c.Write(looksLikePostgres); err != nil {
				t.Fatal(err)
			}
			c.(*net.TCPConn).CloseWrite()
			got, err := io.ReadAll(c)
			if err != nil || !bytes.Equal(got, looksLikePostgres) {
				t.Fatalf("got %q, %v; want the bytes echoed: %q", got, err, looksLikePostgres)
			}
		})
	}
}

// TestDialALPN pins what Go's TLS server negotiates with what Dial offers,
// for each ALPN list the gateway uses.
func TestDialALPN(t *testing.T) {
	checkGoroutines(t)
	tests := map[string]struct {
		server []string
		want   string
	}{
		"postgres": {server: []string{"postgresql"}, want: "postgresql"},
		"http":     {server: []string{"h2", "http/1.1"}, want: "http/1.1"},
		"grpc":     {server: []string{"h2"}, want: ""},
		"tcp":      {server: nil, want: ""},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t)
			addr := f.gateway(t, tc.server, func(c *tls.Conn) { io.Copy(io.Discard, c) })
			p := &Proxy{Service: f.service, Gateway: addr, PublicName: "localhost", IdentityDir: f.dir}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			c, err := p.Dial(ctx)
			if err != nil {
				t.Fatalf("dialing: %v", err)
			}
			defer c.Close()
			if got := c.ConnectionState().NegotiatedProtocol; got != tc.want {
				t.Fatalf("got ALPN %q, want %q", got, tc.want)
			}
		})
	}
}

// TestPostgresStartupTimeout checks that a silent local client is dropped
// after StartupTimeout, and that Serve returns promptly with a client still
// in startup.
func TestPostgresStartupTimeout(t *testing.T) {
	checkGoroutines(t)
	f := newFixture(t)
	got := make(chan []byte, 2)
	addr := f.gateway(t, []string{alpnPostgres}, recording(got))
	serve := func(timeout time.Duration) (string, context.CancelFunc, <-chan struct{}) {
		p := &Proxy{Service: f.service, Gateway: addr, IdentityDir: f.dir, StartupTimeout: timeout,
			Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		var serveErr error
		done := make(chan struct{})
		go func() { serveErr = p.Serve(ctx, ln); close(done) }()
		t.Cleanup(func() {
			cancel()
			<-done
			if serveErr != nil {
				t.Errorf("Serve: %v", serveErr)
			}
		})
		return ln.Addr().String(), cancel, done
	}

	t.Run("silent client times out", func(t *testing.T) {
		local, _, _ := serve(200 * time.Millisecond)
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if b, err := io.ReadAll(c); len(b) > 0 || err != nil {
			t.Fatalf("got %q, %v; want the silent client closed", b, err)
		}
		if b := <-got; len(b) > 0 {
			t.Fatalf("gateway got %q, want nothing", b)
		}
	})

	t.Run("Serve returns during startup", func(t *testing.T) {
		local, cancel, done := serve(time.Minute)
		c, err := net.Dial("tcp", local)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(200 * time.Millisecond) // let it reach the startup read
		cancel()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return after its context ended")
		}
		if b := <-got; len(b) > 0 {
			t.Fatalf("gateway got %q, want nothing", b)
		}
	})
}

// TestReadStartupTruncated feeds every proper prefix of valid first
// messages: each must give an error, never a message or a panic.
func TestReadStartupTruncated(t *testing.T) {
	valid := map[string][]byte{
		"startup":    startup("user", "alice", "database", "app"),
		"cancel":     encode(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}),
		"SSLRequest": encode(&pgproto3.SSLRequest{}),
		"GSSENC":     encode(&pgproto3.GSSEncRequest{}),
	}
	for name, b := range valid {
		t.Run(name, func(t *testing.T) {
			if _, frame, err := readStartup(bytes.NewReader(b)); err != nil || !bytes.Equal(frame, b) {
				t.Fatalf("whole message: got %q, %v; want it back", frame, err)
			}
			for i := range len(b) {
				if msg, _, err := readStartup(bytes.NewReader(b[:i])); err == nil {
					t.Fatalf("prefix of %d bytes: got %T, want an error", i, msg)
				}
			}
		})
	}
}

func FuzzReadStartup(f *testing.F) {
	f.Add(startup("user", "alice"))
	f.Add(encode(&pgproto3.CancelRequest{ProcessID: 1, SecretKey: []byte{1, 2, 3, 4}}))
	f.Add(encode(&pgproto3.SSLRequest{}))
	f.Add(cat(encode(&pgproto3.GSSEncRequest{}), encode(&pgproto3.SSLRequest{}), startup("user", "bob")))
	f.Add([]byte{0, 0, 0, 8, 0, 3, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		msg, frame, err := readFirstMessage(&struct {
			io.Reader
			io.Writer
		}{bytes.NewReader(b), io.Discard})
		if err != nil {
			return
		}
		if !bytes.Contains(b, frame) || len(frame) > maxStartupLen {
			t.Fatalf("got frame %q from %q", frame, b)
		}
		switch msg.(type) {
		case *pgproto3.StartupMessage, *pgproto3.CancelRequest:
		default:
			t.Fatalf("got %T, want a StartupMessage or CancelRequest", msg)
		}
	})
}
