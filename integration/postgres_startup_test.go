package integration

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/protocols"
)

// TestPostgresStartupRefusals: a session that may not start is refused
// before any statement: a database or role the policy does not allow, an
// identity no rule admits (FATAL 28000 each, recorded as denied), no
// client certificate, and a plaintext startup without TLS.
func TestPostgresStartupRefusals(t *testing.T) {
	e := startPG(t, "quic")
	eve := issue(t, e.g, outsider)
	// A role that exists and that trust auth would let in: only the policy
	// stands in the way.
	role := pgName("role")
	pgExec(t, superuser(t, "postgres"), "CREATE ROLE "+role+" LOGIN")
	t.Cleanup(func() {
		c, err := pgx.Connect(context.Background(), "host=127.0.0.1 port=5432 user=postgres sslmode=disable dbname=postgres")
		if err == nil {
			c.Exec(context.Background(), "DROP ROLE IF EXISTS "+role)
			c.Close(context.Background())
		}
	})
	connect := func(cfg *pgx.ConnConfig) error {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, cfg)
		if err == nil {
			defer c.Close(ctx)
			// With TLS 1.3 a refused certificate may show only at the first read.
			_, err = c.Exec(ctx, "SELECT 1")
		}
		return err
	}
	tests := map[string]struct {
		svid     *x509svid.SVID
		user, db string
		code     string // "": any error
		mention  string
	}{
		"database not allowed":     {svid: e.reader, user: "postgres", db: "postgres", code: "28000", mention: "postgres"},
		"role not allowed":         {svid: e.reader, user: role, db: "test", code: "28000", mention: role},
		"identity without a rule":  {svid: eve, user: "postgres", db: "test", code: "28000"},
		"no client certificate":    {svid: nil, user: "postgres", db: "test"},
		"writer, missing database": {svid: e.writer, user: "postgres", db: "no_such_db_postern", code: "3D000"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := connect(pgConfig(t, e.g, "pg", tc.svid, tc.user, tc.db))
			if err == nil {
				t.Fatal("got a session, want refused")
			}
			if tc.code != "" {
				pe := wantPgError(t, "startup", err, tc.code, tc.mention)
				if pe != nil && pe.Severity != "FATAL" {
					t.Errorf("got severity %s, want FATAL", pe.Severity)
				}
			}
		})
	}

	t.Run("plaintext startup", func(t *testing.T) {
		host, port, _ := net.SplitHostPort(e.g.addr())
		cfg, err := pgx.ParseConfig(fmt.Sprintf("host=%s port=%s user=postgres dbname=test sslmode=disable", host, port))
		if err != nil {
			t.Fatal(err)
		}
		wantPgError(t, "plaintext startup", connect(cfg), "28000", "TLS")
	})

	t.Run("psql shows the refusal", func(t *testing.T) {
		dir := identityDir(t, e.g, e.reader)
		out, err := psql(t, dir, libpqTLS(e.g.addr(), dir, "postgres", "postgres"), "-c", "SELECT 1")
		if err == nil || !strings.Contains(out, "FATAL") {
			t.Fatalf("psql to a database not allowed: got %v, %q; want a FATAL error", err, out)
		}
	})

	t.Run("allowed after refusals", func(t *testing.T) {
		wantUsable(t, pgConnect(t, e.g, e.reader, "postgres", "test"), "startup refusals")
	})

	t.Run("recorded as denied", func(t *testing.T) {
		var denied int
		pgRecordings(t, e.g, readerID, func(rs []pgRecording) bool {
			denied = 0
			for _, r := range rs {
				if r.end.Outcome == protocols.OutcomeDenied && len(r.denies) > 0 {
					denied++
				}
			}
			return denied >= 3
		})
		if denied < 3 { // database, role, psql
			t.Errorf("got %d denied recordings of the reader, want at least 3", denied)
		}
		var eveDenied bool
		pgRecordings(t, e.g, outsider, func(rs []pgRecording) bool {
			for _, r := range rs {
				eveDenied = eveDenied || r.end.Outcome == protocols.OutcomeDenied
			}
			return eveDenied
		})
		if !eveDenied {
			t.Error("the refusal of an identity without a rule is not recorded as denied")
		}
	})
}
