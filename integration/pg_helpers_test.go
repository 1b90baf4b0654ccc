package integration

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgconn/ctxwatch"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols"
)

// pgPolicy: group ops may run everything everywhere; group analysts may
// only read, as role postgres in database test, on services pg and pgauth;
// group inserters may read and INSERT there; group app may log in to database app of pgauth as scram_user, md5_user
// or clear_user.
const pgPolicy = `rules:
  - name: ops-all
    identities: [group:ops]
    services: ["*"]
  - name: analysts-read
    identities: [group:analysts]
    services: [pg, pgauth]
    postgres:
      databases: [test]
      users: [postgres]
      statements: [read]
  - name: inserters
    identities: [group:inserters]
    services: [pg]
    postgres:
      databases: [test]
      users: [postgres]
      statements: [read, INSERT]
  - name: dora-no-truncate
    effect: deny
    identities: [spiffe://postern.local/user/dora]
    services: [pg]
    postgres:
      statements: ["TRUNCATE TABLE"]
  - name: app-login
    identities: [group:app]
    services: [pgauth]
    postgres:
      databases: [app]
      users: [scram_user, md5_user, clear_user, cert_user]
`

// readerRule is the rule that admits the read-only analysts.
const readerRule = "analysts-read"

// Identities of the Postgres tests.
const (
	writerID = "spiffe://postern.local/user/olga"    // group ops: everything
	readerID = "spiffe://postern.local/user/ann"     // group analysts: read only
	outsider = "spiffe://postern.local/user/eve"     // no rule
	appID    = "spiffe://postern.local/workload/api" // group app
	insertID = "spiffe://postern.local/user/ivan"    // group inserters
	doraID   = "spiffe://postern.local/user/dora"    // group ops, but no TRUNCATE
)

// pgEnv is an in-process gateway with one agent serving the local
// PostgreSQL as service pg.
type pgEnv struct {
	g      *gw
	writer *x509svid.SVID
	reader *x509svid.SVID
}

// startPG runs a gateway with pgPolicy and an agent that serves the local
// PostgreSQL (trust auth) as pg over transport.
func startPG(t testing.TB, transport string) *pgEnv {
	t.Helper()
	requirePostgres(t)
	g := startGateway(t, pgPolicy)
	startAgent(t, g, "db1", transport, t.TempDir(),
		agent.Service{Name: "pg", Protocol: "postgres", Address: pgAddr}).waitConnected(t)
	return &pgEnv{g: g,
		writer: issue(t, g, writerID, "ops"),
		reader: issue(t, g, readerID, "analysts")}
}

func requirePostgres(t testing.TB) {
	t.Helper()
	c, err := net.DialTimeout("tcp", pgAddr, 2*time.Second)
	if err != nil {
		t.Fatalf("PostgreSQL must answer on %s for this test: %v", pgAddr, err)
	}
	c.Close()
}

// pgConfig is a pgx config that reaches service through the gateway with
// svid (nil: no client certificate), SNI SERVICE.localhost, verifying the
// gateway against its bundle. Cancelling a query's context sends a
// CancelRequest, as libpq's PQcancel does.
func pgConfig(t testing.TB, g *gw, service string, svid *x509svid.SVID, user, db string) *pgx.ConnConfig {
	t.Helper()
	host, port, _ := net.SplitHostPort(g.addr())
	cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable connect_timeout=10", host, port, user, db))
	if err != nil {
		t.Fatal(err)
	}
	conf := &tls.Config{ServerName: service + ".localhost", RootCAs: g.roots()}
	if svid != nil {
		conf.Certificates = []tls.Certificate{pkitest.TLSCertificate(svid)}
	}
	cfg.TLSConfig = conf
	cfg.BuildContextWatcherHandler = func(c *pgconn.PgConn) ctxwatch.Handler {
		return &pgconn.CancelRequestContextWatcherHandler{Conn: c, DeadlineDelay: 15 * time.Second}
	}
	return cfg
}

// pgConnect opens a pgx connection through the gateway, closed at the end
// of the test.
func pgConnect(t testing.TB, g *gw, svid *x509svid.SVID, user, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, pgConfig(t, g, "pg", svid, user, db))
	if err != nil {
		t.Fatalf("connecting through postern as %s to %s: %v", user, db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// superuser opens a direct connection (not through Postern) to db.
func superuser(t testing.TB, db string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname="+db)
	if err != nil {
		t.Fatalf("connecting directly to %s: %v", db, err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

var pgSeq atomic.Int64

// pgName returns a name no other test (or test process) uses.
func pgName(prefix string) string {
	return fmt.Sprintf("postern_%s_%d_%d", prefix, time.Now().UnixNano()%1e9, pgSeq.Add(1))
}

// pgTable creates a table (id int primary key, v text) in database test
// with rows 1:a, 2:b, 3:c, dropped at the end of the test.
func pgTable(t testing.TB, prefix string) string {
	t.Helper()
	name := pgName(prefix)
	su := superuser(t, "test")
	pgExec(t, su, fmt.Sprintf("CREATE TABLE %s (id int PRIMARY KEY, v text); INSERT INTO %[1]s VALUES (1,'a'),(2,'b'),(3,'c')", name))
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=test")
		if err == nil {
			c.Exec(context.Background(), "DROP TABLE IF EXISTS "+name+" CASCADE")
			c.Close(context.Background())
		}
	})
	return name
}

// pgExec runs sql (simple protocol) and fails t on an error.
func pgExec(t testing.TB, c *pgx.Conn, sql string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.PgConn().Exec(ctx, sql).ReadAll(); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// pgString runs a query whose one result is one value and returns it.
func pgString(t testing.TB, c *pgx.Conn, sql string, args ...any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	var s string
	if err := c.QueryRow(ctx, sql, args...).Scan(&s); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return s
}

// pgCode returns the SQLSTATE of err, or "" if it is not a server error.
func pgCode(err error) string {
	var pe *pgconn.PgError
	if errors.As(err, &pe) {
		return pe.Code
	}
	return ""
}

// wantPgError fails t unless err is a server error with code, whose
// message holds every one of subs.
func wantPgError(t testing.TB, what string, err error, code string, subs ...string) *pgconn.PgError {
	t.Helper()
	var pe *pgconn.PgError
	if !errors.As(err, &pe) {
		t.Errorf("%s: got error %v, want SQLSTATE %s", what, err, code)
		return nil
	}
	if pe.Code != code {
		t.Errorf("%s: got SQLSTATE %s (%s), want %s", what, pe.Code, pe.Message, code)
		return pe
	}
	for _, s := range subs {
		if !strings.Contains(pe.Message+" "+pe.Detail+" "+pe.Hint, s) {
			t.Errorf("%s: got message %q, want it to mention %q", what, pe.Message, s)
		}
	}
	return pe
}

// wantUsable fails t unless c still answers SELECT 1.
func wantUsable(t testing.TB, c *pgx.Conn, after string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int
	if err := c.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil || n != 1 {
		t.Fatalf("after %s: SELECT 1 got %d, %v; want 1 (the session should stay usable)", after, n, err)
	}
}

// pgRecording is one session's recording, with its Postgres events.
type pgRecording = recorded

// pgRecordings reads every recording of g whose identity is id, once they
// have all ended and done (if not nil) is true of them, or after 10s; the
// caller then checks what it got. Close the sessions first: a recording
// is written a little after its session ends.
func pgRecordings(t testing.TB, g *gw, id string, done func([]pgRecording) bool) []pgRecording {
	t.Helper()
	var out []pgRecording
	var last error
	read := func() (bool, error) {
		all, err := readRecordings(g.srv.Data().RecordingsPath())
		if err != nil {
			return false, err
		}
		out = out[:0]
		ended := true
		for _, r := range all {
			if r.start.Identity != id {
				continue
			}
			ended = ended && r.end != nil
			out = append(out, r)
		}
		return ended, nil
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		ended, err := read()
		last = err
		if err == nil && ended && (done == nil || done(out)) {
			return out
		}
		if time.Now().After(deadline) {
			if err == nil && ended {
				return out
			}
			t.Fatalf("recordings of %s not all ended and readable within 10s: %v", id, last)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// pgQuery returns the last postgres.query event of id's recordings whose
// SQL is sql (with a trailing * : starts with it), waiting up to 10s for
// it to be written; nil if there is none.
func pgQuery(t testing.TB, g *gw, id, sql string) *protocols.PostgresQueryEvent {
	t.Helper()
	var found *protocols.PostgresQueryEvent
	pgRecordings(t, g, id, func(rs []pgRecording) bool {
		found = nil
		for _, r := range rs {
			for _, q := range r.queries {
				if q.SQL == sql || (strings.HasSuffix(sql, "*") && strings.HasPrefix(q.SQL, sql[:len(sql)-1])) {
					found = &q
				}
			}
		}
		return found != nil
	})
	return found
}

// identityDir writes svid and the gateway's roots as SVID files.
func identityDir(t testing.TB, g *gw, svid *x509svid.SVID) string {
	t.Helper()
	dir := t.TempDir()
	if err := pki.WriteFiles(dir, svid, g.srv.Data().CA.Roots()); err != nil {
		t.Fatal(err)
	}
	return dir
}

// libpqTLS is the libpq conninfo that reaches service pg at gateway (host:port)
// with the SVID files in dir.
func libpqTLS(gateway, dir, user, db string) string {
	host, port, _ := net.SplitHostPort(gateway)
	return "host=pg.localhost hostaddr=" + host + " port=" + port + " sslmode=verify-full" +
		" sslrootcert=" + filepath.Join(dir, pki.BundleFile) + " sslcert=" + filepath.Join(dir, pki.SVIDFile) +
		" sslkey=" + filepath.Join(dir, pki.KeyFile) + " user=" + user + " dbname=" + db + " connect_timeout=10"
}

// psql runs psql -X -A -t -v ON_ERROR_STOP=1 with conninfo and args, in dir,
// and returns its combined output.
func psql(t testing.TB, dir, conninfo string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "psql", append([]string{"-XAt", "-v", "ON_ERROR_STOP=1", "-d", conninfo}, args...)...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if ctx.Err() != nil {
		t.Fatalf("psql %v did not finish within 60s:\n%s", args, out)
	}
	return strings.TrimSpace(string(out)), err
}

// rawCancel sends a plaintext CancelRequest for pid and key to addr, as
// psql 15 does, and waits until the other side closes the connection.
func rawCancel(addr string, pid uint32, key []byte) error {
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 12+len(key))
	binary.BigEndian.PutUint32(buf[0:4], uint32(len(buf)))
	binary.BigEndian.PutUint32(buf[4:8], 80877102)
	binary.BigEndian.PutUint32(buf[8:12], pid)
	copy(buf[12:], key)
	if _, err := c.Write(buf); err != nil {
		return err
	}
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return errors.New("the cancel connection was not closed within 10s")
	}
	return nil
}

// backendActive reports whether a backend runs a query containing marker
// (seen from a direct superuser connection).
func backendActive(t testing.TB, su *pgx.Conn, marker string) bool {
	t.Helper()
	var n int
	err := su.QueryRow(context.Background(),
		"SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE '%'||$1||'%' AND pid <> pg_backend_pid()", marker).Scan(&n)
	if err != nil {
		t.Fatalf("reading pg_stat_activity: %v", err)
	}
	return n > 0
}
