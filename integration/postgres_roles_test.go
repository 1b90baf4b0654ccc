package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/connect"
	"github.com/postern/postern/protocols"
)

// rolesPolicy is the issue's three identities, three rules: an analyst who
// may only read, a writer who may change rows, and a DBA who may run
// everything, all as role postgres in database test.
const rolesPolicy = `rules:
  - name: analyst-read
    identities: [group:analysts]
    services: [pg]
    postgres: {databases: [test], users: [postgres], statements: [read]}
  - name: writer-rows
    identities: [group:writers]
    services: [pg]
    postgres: {databases: [test], users: [postgres], statements: [read, write]}
  - name: dba-all
    identities: [group:dba]
    services: [pg]
`

// TestPostgresThreeRoles: each of the three identities gets exactly its
// rights through psql (libpq, mTLS), pgx (mTLS) and postern connect (psql
// with sslmode=disable on the local side), and every attempt, allowed or
// refused, is in its recordings.
func TestPostgresThreeRoles(t *testing.T) {
	requirePostgres(t)
	g := startGateway(t, rolesPolicy)
	startAgent(t, g, "db1", "tls", t.TempDir(),
		agent.Service{Name: "pg", Protocol: "postgres", Address: pgAddr}).waitConnected(t)
	table := pgTable(t, "roles")
	su := superuser(t, "test")

	type attempt struct {
		sql   string
		allow map[string]bool // by identity name
	}
	attempts := []attempt{
		{"SELECT count(*) FROM " + table, map[string]bool{"analyst": true, "writer": true, "dba": true}},
		{"UPDATE " + table + " SET v = v WHERE id = 1", map[string]bool{"writer": true, "dba": true}},
		{"CREATE INDEX ON " + table + " (v)", map[string]bool{"dba": true}},
		{"SELECT pg_cancel_backend(0)", map[string]bool{"dba": true}},
	}
	rules := map[string]string{"analyst": "analyst-read", "writer": "writer-rows", "dba": "dba-all"}
	groups := map[string]string{"analyst": "analysts", "writer": "writers", "dba": "dba"}

	for _, who := range []string{"analyst", "writer", "dba"} {
		id := "spiffe://postern.local/user/" + who
		svid := issue(t, g, id, groups[who])
		dir := identityDir(t, g, svid)

		// Through postern connect: a local plaintext port.
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		pctx, pcancel := context.WithCancel(context.Background())
		t.Cleanup(pcancel)
		go (&connect.Proxy{Service: "pg", Gateway: g.addr(), IdentityDir: dir}).Serve(pctx, ln)
		lhost, lport, _ := net.SplitHostPort(ln.Addr().String())

		clients := map[string]func(sql string) error{
			"psql": func(sql string) error {
				out, err := psql(t, dir, libpqTLS(g.addr(), dir, "postgres", "test"), "-c", sql)
				if err != nil {
					return fmt.Errorf("%w: %s", err, out)
				}
				return nil
			},
			"pgx": func(sql string) error {
				c := pgConnect(t, g, svid, "postgres", "test")
				defer c.Close(context.Background())
				_, err := c.Exec(context.Background(), sql)
				return err
			},
			"connect": func(sql string) error {
				ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
				defer cancel()
				c, err := pgx.Connect(ctx, "host="+lhost+" port="+lport+" user=postgres dbname=test sslmode=disable")
				if err != nil {
					return fmt.Errorf("connecting through postern connect: %w", err)
				}
				defer c.Close(ctx)
				_, err = c.Exec(ctx, sql, pgx.QueryExecModeSimpleProtocol)
				return err
			},
		}
		for _, client := range []string{"psql", "pgx", "connect"} {
			for _, a := range attempts {
				t.Run(who+"/"+client+"/"+strings.Fields(a.sql)[0], func(t *testing.T) {
					err := clients[client](a.sql)
					switch {
					case a.allow[who] && err != nil:
						t.Fatalf("%s may run %q, got %v", who, a.sql, err)
					case !a.allow[who] && err == nil:
						t.Fatalf("%s may not run %q, but it ran", who, a.sql)
					case !a.allow[who] && client != "psql":
						wantPgError(t, a.sql, err, "42501", rules[who])
					case !a.allow[who] && !strings.Contains(err.Error(), "Postern: rule") && !strings.Contains(err.Error(), rules[who]):
						t.Fatalf("psql refusal does not name the rule: %v", err)
					}
				})
			}
		}

		// Every attempt of this identity is recorded with its verdict.
		want := 0
		for _, a := range attempts {
			if !a.allow[who] {
				want += 3
			}
		}
		// Wait for every attempt: a recording still in its write buffer is
		// not on disk yet, so "all ended" alone can miss the last session.
		attempted := func(q protocols.PostgresQueryEvent) bool {
			return strings.Contains(q.SQL, table) || strings.Contains(q.SQL, "pg_cancel_backend")
		}
		recs := pgRecordings(t, g, id, func(rs []pgRecording) bool {
			n := 0
			for _, r := range rs {
				for _, q := range r.queries {
					if attempted(q) {
						n++
					}
				}
			}
			return n >= 3*len(attempts)
		})
		denied, allowed := 0, 0
		for _, r := range recs {
			for _, q := range r.queries {
				if !attempted(q) {
					continue
				}
				switch q.Verdict {
				case protocols.VerdictDeny:
					denied++
					if q.Code != "42501" || q.Rule != rules[who] {
						t.Errorf("%s: refusal recorded as code %q rule %q", who, q.Code, q.Rule)
					}
				case protocols.VerdictAllow:
					allowed++
				}
			}
		}
		if denied != want || allowed != 3*len(attempts)-want {
			t.Errorf("%s: recorded %d refused and %d allowed attempts, want %d and %d",
				who, denied, allowed, want, 3*len(attempts)-want)
		}
	}
	// The decisions are counted for operators: per client the analyst was
	// refused 3 attempts, the writer 2 and the DBA none: 15 in all.
	code, body, err := httpGet("http://" + g.srv.OpsAddr().String() + "/metrics")
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics: %d %v", code, err)
	}
	denied := 0.0
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, `postern_postgres_queries_total{class=`) && strings.Contains(line, `verdict="deny"`) {
			var v float64
			fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v)
			denied += v
		}
	}
	if denied != 15 {
		t.Errorf("postern_postgres_queries_total counts %v refusals, want 15", denied)
	}

	var idx int
	if err := su.QueryRow(context.Background(), "SELECT count(*) FROM pg_indexes WHERE tablename = $1", table).Scan(&idx); err != nil {
		t.Fatal(err)
	}
	if idx != 1+3 { // the primary key, and the DBA's index from each client
		t.Errorf("got %d indexes on %s, want 4: only the DBA's CREATE INDEX may have run", idx, table)
	}
}

// TestPostgresPolicyReloadInSession: a policy change applies to the next
// statement of a session already open, in both directions.
func TestPostgresPolicyReloadInSession(t *testing.T) {
	requirePostgres(t)
	g := startGateway(t, rolesPolicy)
	startAgent(t, g, "db1", "tls", t.TempDir(),
		agent.Service{Name: "pg", Protocol: "postgres", Address: pgAddr}).waitConnected(t)
	table := pgTable(t, "reload")
	c := pgConnect(t, g, issue(t, g, "spiffe://postern.local/user/wes", "writers"), "postgres", "test")
	ctx := context.Background()
	update := "UPDATE " + table + " SET v = 'x' WHERE id = 1"
	if _, err := c.Exec(ctx, update); err != nil {
		t.Fatalf("writer before the reload: %v", err)
	}
	write := func(text string) { g.writePolicy(t, text) }
	readOnly := strings.Replace(rolesPolicy, "statements: [read, write]", "statements: [read]", 1)
	write(readOnly)
	waitFor(t, 5*time.Second, "writes refused after the reload", func() bool {
		_, err := c.Exec(ctx, update)
		return pgCode(err) == "42501"
	})
	wantUsable(t, c, "a refusal after the reload")
	write(rolesPolicy)
	waitFor(t, 5*time.Second, "writes allowed again", func() bool {
		_, err := c.Exec(ctx, update)
		return err == nil
	})
}
