package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/agent"
)

const ratePolicy = `rules:
  - name: echo-2-per-hour
    identities: [group:ops]
    services: [echo]
    rate: 2/h
  - name: pg-3-per-hour
    identities: [group:analysts]
    services: [pg]
    rate: 3/h
    postgres: {databases: [test], users: [postgres], statements: [read]}
`

// TestRateLimits: over a rule's rate, a TCP connection is closed after the
// handshake and recorded, and a Postgres statement gets ERROR 53400 naming
// the rule while the session stays open (SPEC §7).
func TestRateLimits(t *testing.T) {
	requirePostgres(t)
	g := startGateway(t, ratePolicy)
	startAgent(t, g, "db1", "tls", t.TempDir(), echoService(startEcho(t)),
		agent.Service{Name: "pg", Protocol: "postgres", Address: pgAddr}).waitConnected(t)

	ops := issue(t, g, "spiffe://postern.local/user/olga", "ops")
	waitFor(t, 10*time.Second, "echo reachable", func() bool { return echoOnce(g, "echo", ops) == nil }) // uses 1 of 2
	if err := echoOnce(g, "echo", ops); err != nil {
		t.Fatalf("second connection within 2/h: %v", err)
	}
	if err := echoOnce(g, "echo", ops); err == nil {
		t.Fatal("third connection within the hour got through a 2/h rate")
	}
	if !strings.Contains(g.logs.String(), "over the rate limit of rule") {
		t.Errorf("the refusal is not in the log:\n%s", g.logs.String())
	}

	c := pgConnect(t, g, issue(t, g, "spiffe://postern.local/user/ann", "analysts"), "postgres", "test")
	ctx := context.Background()
	for i := range 3 {
		if _, err := c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol); err != nil {
			t.Fatalf("statement %d within 3/h: %v", i+1, err)
		}
	}
	_, err := c.Exec(ctx, "SELECT 1", pgx.QueryExecModeSimpleProtocol)
	e := wantPgError(t, "fourth statement", err, "53400", "pg-3-per-hour")
	if e.Severity != "ERROR" || c.PgConn().IsClosed() {
		t.Fatalf("a rate refusal must leave the session open: %s, closed %v", e.Severity, c.PgConn().IsClosed())
	}
	c.Close(ctx) // recordings are read once their sessions end
	if q := pgQuery(t, g, "spiffe://postern.local/user/ann", "SELECT 1"); q == nil || q.Code != "53400" {
		t.Fatalf("the rate refusal is not recorded as 53400: %+v", q)
	}
}
