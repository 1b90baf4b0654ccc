package agent

import (
	"bufio"
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/internal/pgtest"
	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/login"
	"github.com/postern/postern/protocols/tunnel"
)

// lockedBuffer collects log output from several goroutines.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// testAgent is an Agent with services and no tunnel: streams are served
// straight from loopback TCP connections, as the tunnel would hand them.
type testAgent struct {
	*Agent
	logs *lockedBuffer
	wg   sync.WaitGroup
}

func newTestAgent(t *testing.T, services ...Service) *testAgent {
	t.Helper()
	logs := &lockedBuffer{}
	cfg := Config{Gateway: "127.0.0.1:1", Name: "a1", Services: services,
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg = cfg.withDefaults()
	a := &testAgent{Agent: &Agent{cfg: cfg, log: cfg.Logger, services: map[string]Service{}}, logs: logs}
	for _, s := range services {
		a.services[s.Name] = s
	}
	t.Cleanup(a.wg.Wait) // every stream handler has returned
	return a
}

// stream opens a stream with header h, served by the agent, and reads the
// agent's Reply.
func (a *testAgent) stream(t *testing.T, h tunnel.Header) (tunnel.Reply, net.Conn, *bufio.Reader) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	c, err := net.Dial("tcp", l.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	s, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		a.serveStream(context.Background(), s)
	}()
	h.Kind = tunnel.KindData
	if err := tunnel.WriteHeader(c, h); err != nil {
		t.Fatal(err)
	}
	c.SetDeadline(time.Now().Add(20 * time.Second))
	r, err := tunnel.ReadReply(c)
	if err != nil {
		t.Fatal(err)
	}
	return r, c, bufio.NewReader(c)
}

func session(user, database string, params map[string]string) tunnel.Header {
	h := tunnel.Header{Service: "pg", Session: "s1", Identity: "spiffe://postern.local/user/alice",
		Params: map[string]string{login.ParamUser: user, login.ParamDatabase: database}}
	for k, v := range params {
		h.Params[login.ParamPrefix+k] = v
	}
	return h
}

// query runs a simple query over a stream after its startup and returns
// the first column of each row, or the server's error.
func query(t *testing.T, c net.Conn, br *bufio.Reader, sql string) ([]string, *pgproto3.ErrorResponse) {
	t.Helper()
	fe := sendQuery(t, c, br, sql)
	return pgtest.Answer(t, fe)
}

func sendQuery(t *testing.T, c net.Conn, br *bufio.Reader, sql string) *pgproto3.Frontend {
	t.Helper()
	fe := pgproto3.NewFrontend(br, c)
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatal(err)
	}
	return fe
}

func secret(p string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return p, nil }
}

func TestServePostgres(t *testing.T) {
	c := pgtest.Start(t)
	const wrong = "wrong-password-9d2e"
	a := newTestAgent(t, Service{Name: "pg", Protocol: protocols.Postgres, Address: c.Addr, Postgres: &PostgresOptions{
		TLS: login.TLSVerifyFull, RootCAs: c.CA,
		Roles: map[string]login.Credential{
			pgtest.ScramUser: {Password: secret(c.Passwords[pgtest.ScramUser])},
			pgtest.MD5User:   {Password: secret(wrong)},
			pgtest.ClearUser: {Password: func(context.Context) (string, error) { return "", errors.New("PG_CLEAR is empty") }},
			pgtest.CertUser:  {Certificate: &c.ClientCert},
		},
	}})

	t.Run("login and relay", func(t *testing.T) {
		for _, role := range []string{pgtest.ScramUser, pgtest.CertUser} {
			r, conn, br := a.stream(t, session(role, pgtest.Database, map[string]string{"application_name": "agent-test"}))
			if !r.OK {
				t.Fatalf("%s: got reply %+v, want OK", role, r)
			}
			st, err := login.ReadStartup(br)
			if err != nil {
				t.Fatalf("%s: %v", role, err)
			}
			if st.Params["application_name"] != "agent-test" || st.PID == 0 || st.TxStatus != 'I' {
				t.Fatalf("%s: got startup %+v", role, st)
			}
			rows, qerr := query(t, conn, br, "SELECT current_user || ' ' || name FROM items WHERE id = 1")
			if want := role + " " + pgtest.Items[1]; qerr != nil || len(rows) != 1 || rows[0] != want {
				t.Fatalf("got %q, %v; want [%s]", rows, qerr, want)
			}
			conn.Close()
		}
	})

	t.Run("refused logins reach the client", func(t *testing.T) {
		tests := map[string]struct{ user, db, code string }{
			"wrong password":   {pgtest.MD5User, pgtest.Database, "28P01"},
			"missing password": {pgtest.ClearUser, pgtest.Database, "28000"},
			"unknown database": {pgtest.ScramUser, "nope", "3D000"},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				r, _, br := a.stream(t, session(tc.user, tc.db, nil))
				if !r.OK {
					t.Fatalf("got reply %+v, want OK then the server's error", r)
				}
				_, err := login.ReadStartup(br)
				var le *login.LoginError
				if !errors.As(err, &le) || le.Response.Code != tc.code {
					t.Fatalf("got %v, want a LoginError %s", err, tc.code)
				}
			})
		}
	})

	t.Run("cancel", func(t *testing.T) {
		r, conn, br := a.stream(t, session(pgtest.ScramUser, pgtest.Database, nil))
		st, err := login.ReadStartup(br)
		if !r.OK || err != nil {
			t.Fatalf("got %+v, %v", r, err)
		}
		start := time.Now()
		fe := sendQuery(t, conn, br, "SELECT pg_sleep(30)")
		time.Sleep(300 * time.Millisecond)
		cr, cc, _ := a.stream(t, tunnel.Header{Service: "pg", Params: map[string]string{login.ParamCancel: login.CancelValue(st.PID, st.SecretKey)}})
		if !cr.OK {
			t.Errorf("cancel: got reply %+v, want OK", cr)
		}
		cc.Close()
		if _, qerr := pgtest.Answer(t, fe); qerr == nil || qerr.Code != "57014" {
			t.Fatalf("got %v, want 57014", qerr)
		}
		if d := time.Since(start); d > 5*time.Second {
			t.Fatalf("cancelled after %s", d)
		}
		conn.Close()
	})

	t.Run("bad streams", func(t *testing.T) {
		tests := map[string]struct {
			h       tunnel.Header
			wantErr string
		}{
			"no role":          {h: session("", pgtest.Database, nil), wantErr: "no database role"},
			"bad cancel value": {h: tunnel.Header{Service: "pg", Params: map[string]string{login.ParamCancel: "12:zz"}}, wantErr: "cancel key"},
		}
		for name, tc := range tests {
			t.Run(name, func(t *testing.T) {
				if r, _, _ := a.stream(t, tc.h); r.OK || !strings.Contains(r.Error, tc.wantErr) {
					t.Fatalf("got reply %+v, want an error containing %q", r, tc.wantErr)
				}
			})
		}
	})

	a.wg.Wait()
	logs := a.logs.String()
	for _, p := range append([]string{wrong}, c.Passwords[pgtest.ScramUser]) {
		if strings.Contains(logs, p) {
			t.Fatalf("the log shows a password:\n%s", logs)
		}
	}
	for _, want := range []string{"role=" + pgtest.ScramUser, "database=" + pgtest.Database, "session=s1", "identity=spiffe://postern.local/user/alice", "code=28P01"} {
		if !strings.Contains(logs, want) {
			t.Errorf("the log has no %q:\n%s", want, logs)
		}
	}
}

// TestServePostgresUnreachable: a server the agent cannot reach is a Reply
// error, so that the gateway may try another agent.
func TestServePostgresUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	a := newTestAgent(t, Service{Name: "pg", Protocol: protocols.Postgres, Address: addr})
	r, _, _ := a.stream(t, session("postgres", "postgres", nil))
	if r.OK || !strings.Contains(r.Error, "cannot reach pg") {
		t.Fatalf("got reply %+v, want an error saying the agent cannot reach pg", r)
	}
}

func TestValidatePostgres(t *testing.T) {
	pool := x509.NewCertPool()
	tests := map[string]struct {
		svc     Service
		wantErr string
	}{
		"no options":  {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432"}},
		"disable":     {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{TLS: "disable"}}},
		"require":     {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{TLS: "require"}}},
		"verify-full": {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{TLS: "verify-full", RootCAs: pool}}},
		"verify-full without CAs": {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{TLS: "verify-full"}},
			wantErr: "verify-full needs"},
		"bad mode": {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{TLS: "prefer"}},
			wantErr: `unknown mode "prefer"`},
		"on a tcp service": {svc: Service{Name: "echo", Protocol: "tcp", Address: "127.0.0.1:7", Postgres: &PostgresOptions{}},
			wantErr: "postgres options on a tcp service"},
		"negative capture": {svc: Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{CaptureRows: -1}},
			wantErr: "negative"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := Config{Gateway: "127.0.0.1:8443", Name: "a1", Services: []Service{tc.svc}}.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestAnnouncement(t *testing.T) {
	a := newTestAgent(t,
		Service{Name: "pg", Protocol: "postgres", Address: "127.0.0.1:5432", Postgres: &PostgresOptions{CaptureRows: 5}},
		Service{Name: "pg2", Protocol: "postgres", Address: "127.0.0.1:5433"},
		Service{Name: "echo", Protocol: "tcp", Address: "127.0.0.1:7"})
	m := a.announcement()
	want := []tunnel.Service{{Name: "pg", Protocol: "postgres", CaptureRows: 5}, {Name: "pg2", Protocol: "postgres"}, {Name: "echo", Protocol: "tcp"}}
	if m.Type != "announce" || m.Agent != "a1" || len(m.Services) != len(want) {
		t.Fatalf("got %+v, want services %+v", m, want)
	}
	for i := range want {
		if m.Services[i] != want[i] {
			t.Errorf("service %d: got %+v, want %+v", i, m.Services[i], want[i])
		}
	}
}
