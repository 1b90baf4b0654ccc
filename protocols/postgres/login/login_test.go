package login_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/internal/pgtest"
	"github.com/postern/postern/protocols/postgres/login"
)

// systemAddr is the trust-only cluster that .ci/run starts.
const systemAddr = "127.0.0.1:5432"

func password(p string) func(context.Context) (string, error) {
	return func(context.Context) (string, error) { return p, nil }
}

// roles gives each role of c its secret.
func roles(c *pgtest.Cluster) map[string]login.Credential {
	return map[string]login.Credential{
		pgtest.ScramUser: {Password: password(c.Passwords[pgtest.ScramUser])},
		pgtest.MD5User:   {Password: password(c.Passwords[pgtest.MD5User])},
		pgtest.ClearUser: {Password: password(c.Passwords[pgtest.ClearUser])},
		pgtest.CertUser:  {Certificate: &c.ClientCert},
	}
}

// query runs one simple query on a hijacked connection and returns the
// first column of each row, or the server's error.
func query(t *testing.T, conn net.Conn, sql string) ([]string, *pgproto3.ErrorResponse) {
	t.Helper()
	conn.SetDeadline(time.Now().Add(20 * time.Second))
	defer conn.SetDeadline(time.Time{})
	fe := pgproto3.NewFrontend(conn, conn)
	fe.Send(&pgproto3.Query{String: sql})
	if err := fe.Flush(); err != nil {
		t.Fatalf("sending %q: %v", sql, err)
	}
	return pgtest.Answer(t, fe)
}

func TestOpen(t *testing.T) {
	c := pgtest.Start(t)
	tests := map[string]struct {
		cfg      login.Config
		user, db string
		tls      bool
	}{
		"scram":                 {cfg: login.Config{Address: c.Addr}, user: pgtest.ScramUser},
		"md5":                   {cfg: login.Config{Address: c.Addr}, user: pgtest.MD5User},
		"cleartext":             {cfg: login.Config{Address: c.Addr}, user: pgtest.ClearUser},
		"cert over require":     {cfg: login.Config{Address: c.Addr, TLS: login.TLSRequire}, user: pgtest.CertUser, tls: true},
		"cert over verify-full": {cfg: login.Config{Address: c.Addr, TLS: login.TLSVerifyFull, RootCAs: c.CA}, user: pgtest.CertUser, tls: true},
		"scram over require":    {cfg: login.Config{Address: c.Addr, TLS: login.TLSRequire}, user: pgtest.ScramUser, tls: true},
		"md5 over verify-full by name": {cfg: login.Config{Address: c.Addr, TLS: login.TLSVerifyFull, RootCAs: c.CA, ServerName: "localhost"},
			user: pgtest.MD5User, tls: true},
		"trust, system cluster": {cfg: login.Config{Address: systemAddr}, user: "postgres", db: "postgres"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if tc.cfg.Address == systemAddr {
				if d, err := net.DialTimeout("tcp", systemAddr, 2*time.Second); err != nil {
					t.Fatalf("PostgreSQL must answer on %s for this test (.ci/run starts it): %v", systemAddr, err)
				} else {
					d.Close()
				}
			} else {
				tc.cfg.Roles = roles(c)
			}
			db := tc.db
			if db == "" {
				db = pgtest.Database
			}
			conn, err := login.Open(context.Background(), tc.cfg, tc.user, db, nil)
			if err != nil {
				t.Fatalf("got %v, want a login", err)
			}
			defer conn.Close()
			s := conn.Startup
			for _, p := range []string{"server_version", "standard_conforming_strings", "client_encoding"} {
				if s.Params[p] == "" {
					t.Errorf("got no parameter %s in %v", p, s.Params)
				}
			}
			if s.PID == 0 || len(s.SecretKey) == 0 || s.TxStatus != 'I' {
				t.Errorf("got pid %d, key %x, tx %q; want a backend key and 'I'", s.PID, s.SecretKey, s.TxStatus)
			}
			if _, isTLS := conn.Conn.(*tls.Conn); isTLS != tc.tls {
				t.Errorf("got TLS %v, want %v", isTLS, tc.tls)
			}
			sql, want := "SELECT name FROM items WHERE id = 2", pgtest.Items[2]
			if tc.cfg.Address == systemAddr {
				sql, want = "SELECT current_user", "postgres"
			}
			rows, qerr := query(t, conn, sql)
			if qerr != nil || len(rows) != 1 || rows[0] != want {
				t.Fatalf("got rows %q, error %v; want [%s]", rows, qerr, want)
			}
			if rows, _ := query(t, conn, "SELECT current_user"); len(rows) != 1 || rows[0] != tc.user {
				t.Fatalf("logged in as %q, want %s", rows, tc.user)
			}
		})
	}
}

func TestOpenRefused(t *testing.T) {
	c := pgtest.Start(t)
	const wrong = "not-the-password-4f1c"
	tests := map[string]struct {
		cfg      login.Config
		user, db string
		code     string
		inMsg    string // the LoginError's message contains it
		secret   string // the error must not contain it
	}{
		"wrong scram password": {cfg: login.Config{Roles: map[string]login.Credential{pgtest.ScramUser: {Password: password(wrong)}}},
			user: pgtest.ScramUser, code: "28P01", inMsg: "password authentication failed", secret: wrong},
		"wrong md5 password": {cfg: login.Config{Roles: map[string]login.Credential{pgtest.MD5User: {Password: password(wrong)}}},
			user: pgtest.MD5User, code: "28P01", secret: wrong},
		"wrong cleartext password": {cfg: login.Config{Roles: map[string]login.Credential{pgtest.ClearUser: {Password: password(wrong)}}},
			user: pgtest.ClearUser, code: "28P01", secret: wrong},
		"no secret for a password role": {user: pgtest.ScramUser, code: "28P01"},
		"unknown database":              {user: pgtest.ScramUser, db: "nope", code: "3D000", inMsg: `"nope" does not exist`},
		"cert without TLS":              {user: pgtest.CertUser, code: "28000", inMsg: "no encryption"},
		"unknown role":                  {user: "nobody", code: "28000"},
		"empty password": {cfg: login.Config{Roles: map[string]login.Credential{pgtest.ScramUser: {Password: password("")}}},
			user: pgtest.ScramUser, code: "28000", inMsg: `role "scram_user"`},
		"unreadable password": {cfg: login.Config{Roles: map[string]login.Credential{pgtest.ScramUser: {Password: func(context.Context) (string, error) {
			return "", errors.New("reading /run/secret: permission denied")
		}}}}, user: pgtest.ScramUser, code: "28000", inMsg: `role "scram_user"`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			tc.cfg.Address = c.Addr
			if tc.code == "3D000" {
				tc.cfg.Roles = roles(c)
			}
			db := tc.db
			if db == "" {
				db = pgtest.Database
			}
			conn, err := login.Open(context.Background(), tc.cfg, tc.user, db, nil)
			if err == nil {
				conn.Close()
				t.Fatalf("got a login, want %s", tc.code)
			}
			var le *login.LoginError
			if !errors.As(err, &le) {
				t.Fatalf("got %v (%T), want a *LoginError", err, err)
			}
			r := le.Response
			if r.Code != tc.code || r.Severity != "FATAL" || !strings.Contains(r.Message, tc.inMsg) {
				t.Fatalf("got %s %s %q, want FATAL %s containing %q", r.Severity, r.Code, r.Message, tc.code, tc.inMsg)
			}
			for _, p := range append([]string{tc.secret}, c.Passwords[pgtest.ScramUser]) {
				if p != "" && (strings.Contains(err.Error(), p) || strings.Contains(r.Message+r.Detail+r.Hint, p)) {
					t.Fatalf("the error %q leaks a password", err)
				}
			}
		})
	}
}

// TestOpenUnreachable: failing to reach or trust the server is a plain
// error, so that the gateway may try another agent.
func TestOpenUnreachable(t *testing.T) {
	c := pgtest.Start(t)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := l.Addr().String()
	l.Close()
	other := x509.NewCertPool()
	other.AddCert(c.ClientCert.Leaf) // a certificate, but not the server's CA
	tests := map[string]login.Config{
		"nothing listens":           {Address: closed, DialTimeout: 2 * time.Second},
		"verify-full, wrong name":   {Address: c.Addr, TLS: login.TLSVerifyFull, RootCAs: c.CA, ServerName: "db.example"},
		"verify-full, wrong CA":     {Address: c.Addr, TLS: login.TLSVerifyFull, RootCAs: other},
		"server refuses TLS":        {Address: noTLSServer(t), TLS: login.TLSRequire},
		"bad address":               {Address: "127.0.0.1"},
		"verify-full with no roots": {Address: c.Addr, TLS: login.TLSVerifyFull},
	}
	for name, cfg := range tests {
		t.Run(name, func(t *testing.T) {
			conn, err := login.Open(context.Background(), cfg, pgtest.Superuser, pgtest.Database, nil)
			if err == nil {
				conn.Close()
				t.Fatal("got a login, want an error")
			}
			var le *login.LoginError
			if errors.As(err, &le) {
				t.Fatalf("got a LoginError %v, want a plain error", err)
			}
		})
	}
}

// noTLSServer answers every SSLRequest 'N', as a server with ssl=off does.
func noTLSServer(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			var req [8]byte
			if _, err := io.ReadFull(c, req[:]); err == nil {
				c.Write([]byte{'N'})
			}
			c.Close()
		}
	}()
	return l.Addr().String()
}

func TestConfigValidate(t *testing.T) {
	pool := x509.NewCertPool()
	tests := map[string]struct {
		cfg     login.Config
		wantErr string
	}{
		"default":            {cfg: login.Config{Address: "127.0.0.1:5432"}},
		"disable":            {cfg: login.Config{Address: "db:5432", TLS: login.TLSDisable}},
		"require":            {cfg: login.Config{Address: "db:5432", TLS: login.TLSRequire}},
		"verify-full":        {cfg: login.Config{Address: "db:5432", TLS: login.TLSVerifyFull, RootCAs: pool}},
		"verify-full no CAs": {cfg: login.Config{Address: "db:5432", TLS: login.TLSVerifyFull}, wantErr: "verify-full needs"},
		"unknown mode":       {cfg: login.Config{Address: "db:5432", TLS: "prefer"}, wantErr: `unknown mode "prefer"`},
		"no port":            {cfg: login.Config{Address: "db"}, wantErr: "address"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := tc.cfg.Validate()
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("got %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

// TestPasswordReadAtEachLogin: a rotated secret takes effect at the next
// login.
func TestPasswordReadAtEachLogin(t *testing.T) {
	c := pgtest.Start(t)
	current := c.Passwords[pgtest.ScramUser]
	calls := 0
	cfg := login.Config{Address: c.Addr, Roles: map[string]login.Credential{pgtest.ScramUser: {Password: func(context.Context) (string, error) {
		calls++
		return current, nil
	}}}}
	conn, err := login.Open(context.Background(), cfg, pgtest.ScramUser, pgtest.Database, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	current = "rotated-away"
	_, err = login.Open(context.Background(), cfg, pgtest.ScramUser, pgtest.Database, nil)
	var le *login.LoginError
	if !errors.As(err, &le) || le.Response.Code != "28P01" || calls != 2 {
		t.Fatalf("got %v after %d reads, want 28P01 after 2", err, calls)
	}
}

// TestRuntimeParams: the client's startup parameters reach the server.
func TestRuntimeParams(t *testing.T) {
	c := pgtest.Start(t)
	cfg := login.Config{Address: c.Addr, Roles: roles(c)}
	conn, err := login.Open(context.Background(), cfg, pgtest.ScramUser, pgtest.Database,
		map[string]string{"application_name": "postern-test", "default_transaction_read_only": "on"})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if got := conn.Startup.Params["application_name"]; got != "postern-test" {
		t.Errorf("got application_name %q in the startup, want postern-test", got)
	}
	if rows, qerr := query(t, conn, "SHOW default_transaction_read_only"); qerr != nil || len(rows) != 1 || rows[0] != "on" {
		t.Fatalf("got %q, %v; want [on]", rows, qerr)
	}
	if _, qerr := query(t, conn, "CREATE TABLE t (x int)"); qerr == nil || qerr.Code != "25006" {
		t.Fatalf("got %v, want 25006 read-only transaction", qerr)
	}
}

// TestCancel: a CancelRequest over plain TCP ends a query of a TLS session
// (pg_hba does not apply to it) with 57014.
func TestCancel(t *testing.T) {
	c := pgtest.Start(t)
	cfg := login.Config{Address: c.Addr, TLS: login.TLSVerifyFull, RootCAs: c.CA, Roles: roles(c)}
	conn, err := login.Open(context.Background(), cfg, pgtest.CertUser, pgtest.Database, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	go func() {
		time.Sleep(300 * time.Millisecond)
		if err := login.Cancel(context.Background(), cfg, conn.Startup.PID, conn.Startup.SecretKey); err != nil {
			t.Errorf("cancelling: %v", err)
		}
	}()
	start := time.Now()
	_, qerr := query(t, conn, "SELECT pg_sleep(30)")
	if qerr == nil || qerr.Code != "57014" {
		t.Fatalf("got %v, want 57014 query_canceled", qerr)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("the query ended after %s, want within a few seconds", d)
	}
	if rows, qerr := query(t, conn, "SELECT 1"); qerr != nil || len(rows) != 1 {
		t.Fatalf("the session is not usable after the cancel: %q, %v", rows, qerr)
	}

	if err := login.Cancel(context.Background(), login.Config{Address: "127.0.0.1", DialTimeout: time.Second}, 1, []byte{1, 2, 3, 4}); err == nil {
		t.Fatal("cancel to a bad address succeeded")
	}
}

// TestOpenLeavesNothingBuffered: a server that says more right after
// ReadyForQuery (here a NoticeResponse in the same write) does not leave
// bytes inside pgconn: Open drains them with SyncConn, and the first
// message read from the hijacked connection answers the first query sent
// on it. A scripted server, since a real one is silent at that moment.
func TestOpenLeavesNothingBuffered(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	served := make(chan error, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			served <- err
			return
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(10 * time.Second))
		be := pgproto3.NewBackend(c, c)
		if _, err := be.ReceiveStartupMessage(); err != nil {
			served <- err
			return
		}
		be.Send(&pgproto3.AuthenticationOk{})
		be.Send(&pgproto3.ParameterStatus{Name: "server_version", Value: "15.0"})
		be.Send(&pgproto3.BackendKeyData{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}})
		be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
		be.Send(&pgproto3.NoticeResponse{Severity: "NOTICE", Code: "00000", Message: "said after ReadyForQuery"})
		if err := be.Flush(); err != nil {
			served <- err
			return
		}
		for {
			msg, err := be.Receive()
			if err != nil {
				served <- err
				return
			}
			q, ok := msg.(*pgproto3.Query)
			if !ok {
				continue
			}
			if q.String == "-- ping" {
				be.Send(&pgproto3.EmptyQueryResponse{})
			} else {
				be.Send(&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("q"), DataTypeOID: 25, DataTypeSize: -1, Format: 0}}})
				be.Send(&pgproto3.DataRow{Values: [][]byte{[]byte("answer to " + q.String)}})
				be.Send(&pgproto3.CommandComplete{CommandTag: []byte("SELECT 1")})
			}
			be.Send(&pgproto3.ReadyForQuery{TxStatus: 'I'})
			if err := be.Flush(); err != nil {
				served <- err
				return
			}
			if q.String != "-- ping" {
				served <- nil
				return
			}
		}
	}()
	conn, err := login.Open(context.Background(), login.Config{Address: l.Addr().String()}, "u", "d", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if conn.Startup.PID != 42 || conn.Startup.Params["server_version"] != "15.0" {
		t.Fatalf("got startup %+v", conn.Startup)
	}
	rows, qerr := query(t, conn, "first")
	if qerr != nil || len(rows) != 1 || rows[0] != "answer to first" {
		t.Fatalf("got %q, %v; want [answer to first]", rows, qerr)
	}
	if err := <-served; err != nil {
		t.Fatal(err)
	}
}
