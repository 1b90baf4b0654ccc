package integration

import (
	"context"
	"encoding/json"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/gateway/audit"
	"github.com/postern/postern/internal/pgtest"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/protocols"
)

// TestPostgresCLI: with the real binary, a gateway and an agent serving the
// local PostgreSQL (--service pg=postgres://…); psql through postern
// connect (sslmode=disable and prefer), and pgbench straight to the
// gateway with the SVID files in libpq's environment (initialization, then
// 4 clients × 50 transactions in the simple, extended and prepared
// protocols) with no failed transaction.
func TestPostgresCLI(t *testing.T) {
	requirePostgres(t)
	c := startCLIGateway(t)
	c.agent(t, "--service", "pg=postgres://"+pgAddr, "--transport", "quic")
	root, listen, local := c.root, c.listen, loopback(freePort(t))
	ident := c.identity(t, "olga", writerID, "ops")

	t.Run("psql through postern connect", func(t *testing.T) {
		conn := startProc(t, t, "connect", root, "connect", "pg", "--listen", local, "--gateway", listen, "--identity", ident)
		conn.waitLog(t, 10*time.Second, "forwarding", 1)
		host, port, _ := net.SplitHostPort(local)
		for _, mode := range []string{"disable", "prefer"} {
			got, err := psql(t, root, "host="+host+" port="+port+" sslmode="+mode+" user=postgres dbname=test connect_timeout=10",
				"-c", "SELECT 'via connect '||current_database()")
			if err != nil || got != "via connect test" {
				t.Errorf("sslmode=%s: got %v, %q; want %q", mode, err, got, "via connect test")
			}
		}
	})

	t.Run("pgbench", func(t *testing.T) {
		db := pgName("bench")
		su := superuser(t, "postgres")
		pgExec(t, su, "CREATE DATABASE "+db)
		t.Cleanup(func() {
			c, err := pgx.Connect(context.Background(), "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=postgres")
			if err == nil {
				c.Exec(context.Background(), "DROP DATABASE IF EXISTS "+db+" WITH (FORCE)")
				c.Close(context.Background())
			}
		})
		host, port, _ := net.SplitHostPort(listen)
		env := append(os.Environ(), "PGHOST=pg.localhost", "PGHOSTADDR="+host, "PGPORT="+port,
			"PGSSLMODE=verify-full", "PGSSLROOTCERT="+filepath.Join(ident, pki.BundleFile),
			"PGSSLCERT="+filepath.Join(ident, pki.SVIDFile), "PGSSLKEY="+filepath.Join(ident, pki.KeyFile),
			"PGUSER=postgres", "PGDATABASE="+db, "PGCONNECT_TIMEOUT=10")
		pgbench := func(args ...string) string {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, "pgbench", args...)
			cmd.Env, cmd.Dir = env, root
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("pgbench %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			return string(out)
		}
		pgbench("-i", "-s", "1", "-q")
		if got := pgString(t, superuser(t, db), "SELECT count(*)::text FROM pgbench_accounts"); got != "100000" {
			t.Fatalf("after pgbench -i: got %s accounts, want 100000", got)
		}
		processed := regexp.MustCompile(`number of transactions actually processed: (\d+)/(\d+)`)
		for _, proto := range []string{"simple", "extended", "prepared"} {
			out := pgbench("-c", "4", "-j", "2", "-t", "50", "--protocol="+proto)
			m := processed.FindStringSubmatch(out)
			if m == nil || m[1] != "200" || m[2] != "200" {
				t.Errorf("--protocol=%s: got %q, want 200/200 processed\n%s", proto, m, out)
			}
			if !strings.Contains(out, "number of failed transactions: 0 ") {
				t.Errorf("--protocol=%s: want 0 failed transactions\n%s", proto, out)
			}
		}
	})
}

// cliGateway is a postern gateway process with pgPolicy and a join token
// for one agent.
type cliGateway struct {
	root, data, listen, tokenFile string
	gateway                       *proc
}

func startCLIGateway(t *testing.T) *cliGateway {
	t.Helper()
	posternBinary(t)
	root := t.TempDir()
	c := &cliGateway{root: root, data: filepath.Join(root, "data"), listen: loopback(freePort(t)),
		tokenFile: filepath.Join(root, "agent.token")}
	policy, ops := filepath.Join(root, "policy.yaml"), loopback(freePort(t))
	if err := os.WriteFile(policy, []byte(pgPolicy), 0o644); err != nil {
		t.Fatal(err)
	}
	c.gateway = startProc(t, t, "gateway", root, "gateway", "--data-dir", c.data, "--listen", c.listen, "--ops-listen", ops, "--policy", policy)
	waitReady(t, c.gateway, ops)
	r := runCLI(t, root, "", "token", "create", "--data-dir", c.data, "--name", "db1")
	if r.code != 0 {
		t.Fatalf("token create: exit %d: %s", r.code, r.stderr)
	}
	if err := os.WriteFile(c.tokenFile, []byte(r.stdout), 0o600); err != nil {
		t.Fatal(err)
	}
	return c
}

// agent starts the agent db1 with args added and waits for its services.
func (c *cliGateway) agent(t *testing.T, args ...string) *proc {
	t.Helper()
	a := startProc(t, t, "agent", c.root, append([]string{"agent", "--gateway", c.listen, "--name", "db1",
		"--token-file", c.tokenFile, "--data-dir", filepath.Join(c.root, "agent")}, args...)...)
	c.gateway.waitLog(t, 15*time.Second, "agent announced services", 1)
	return a
}

// identity issues an SVID with postern identity issue into root/name.
func (c *cliGateway) identity(t *testing.T, name, id string, groups ...string) string {
	t.Helper()
	dir := filepath.Join(c.root, name)
	args := []string{"identity", "issue", "--data-dir", c.data, "--id", id, "--out", dir}
	for _, g := range groups {
		args = append(args, "--group", g)
	}
	if r := runCLI(t, c.root, "", args...); r.code != 0 {
		t.Fatalf("identity issue: exit %d: %s", r.code, r.stderr)
	}
	return dir
}

// TestPostgresCLICredentials: the agent binary's YAML config holds the
// secrets (password_env, password_file, cert_file/key_file), verify-full
// TLS to the server (ca_file) and capture_rows; psql with only an SVID logs
// in as each role, the recording holds the captured rows, and no password
// shows in the recordings or the agent's log.
func TestPostgresCLICredentials(t *testing.T) {
	cl := pgtest.Start(t)
	c := startCLIGateway(t)
	pwFile := filepath.Join(c.root, "clear.password")
	if err := os.WriteFile(pwFile, []byte(cl.Passwords[pgtest.ClearUser]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("POSTERN_TEST_SCRAM_PASSWORD", cl.Passwords[pgtest.ScramUser])
	config := filepath.Join(c.root, "agent.yaml")
	yaml := `services:
  - name: pgauth
    protocol: postgres
    address: ` + cl.Addr + `
    postgres:
      roles:
        scram_user: {password_env: POSTERN_TEST_SCRAM_PASSWORD}
        clear_user: {password_file: ` + pwFile + `}
        cert_user: {cert_file: ` + cl.ClientCertFile + `, key_file: ` + cl.ClientKeyFile + `}
      tls: verify-full
      ca_file: ` + cl.CAFile + `
      server_name: localhost
      capture_rows: 2
`
	if err := os.WriteFile(config, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	agentProc := c.agent(t, "--config", config, "--transport", "tls")
	ident := c.identity(t, "api", appID, "app")
	for _, role := range []string{pgtest.ScramUser, pgtest.ClearUser, pgtest.CertUser} {
		conninfo := strings.Replace(libpqTLS(c.listen, ident, role, pgtest.Database), "host=pg.localhost", "host=pgauth.localhost", 1)
		out, err := psql(t, c.root, conninfo, "-w", "-c", "SELECT current_user || ' ' || string_agg(name, ',' ORDER BY id) FROM items")
		if want := role + " apple,banana,cherry"; err != nil || out != want {
			t.Errorf("%s: got %v, %q; want %q", role, err, out, want)
		}
	}

	// capture_rows: 2 keeps the first two rows of each result.
	const listItems = "SELECT name FROM items ORDER BY id"
	conninfo := strings.Replace(libpqTLS(c.listen, ident, pgtest.ScramUser, pgtest.Database), "host=pg.localhost", "host=pgauth.localhost", 1)
	if out, err := psql(t, c.root, conninfo, "-w", "-c", listItems); err != nil || out != "apple\nbanana\ncherry" {
		t.Fatalf("got %v, %q; want the three items", err, out)
	}
	dir := filepath.Join(c.data, "recordings")
	var captured [][]*string
	waitFor(t, 10*time.Second, "a recorded query with captured rows", func() bool {
		files, _ := audit.List(dir)
		for _, f := range files {
			audit.Read(f.Path, func(rec audit.Record) error {
				if rec.Type != protocols.PostgresQuery {
					return nil
				}
				var q protocols.PostgresQueryEvent
				if json.Unmarshal(rec.Data, &q) == nil && q.SQL == listItems {
					captured = q.Result
					if q.Rows != 3 {
						t.Errorf("got rows %d recorded, want 3", q.Rows)
					}
				}
				return nil
			})
		}
		return captured != nil
	})
	var got []string
	for _, row := range captured {
		for _, v := range row {
			if v == nil {
				got = append(got, "NULL")
			} else {
				got = append(got, *v)
			}
		}
	}
	if strings.Join(got, ",") != "apple,banana" {
		t.Errorf("got captured rows %q, want apple and banana (capture_rows 2)", got)
	}
	for p, data := range recordingTexts(t, dir) {
		for role, pw := range cl.Passwords {
			if strings.Contains(data, pw) {
				t.Errorf("%s holds the password of %s", p, role)
			}
		}
	}
	for role, pw := range cl.Passwords {
		if strings.Contains(agentProc.stderr.String(), pw) || strings.Contains(c.gateway.stderr.String(), pw) {
			t.Errorf("a log holds the password of %s", role)
		}
	}
}
