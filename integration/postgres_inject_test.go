package integration

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/internal/pgtest"
	"github.com/postern/postern/protocols/postgres/login"
)

// TestPostgresCredentialInjection: the agent logs in to a cluster that
// wants passwords (scram-sha-256, cleartext) or a client certificate, over
// verify-full TLS, with secrets only it holds; the client presents only its
// SVID. A role without a credential gets the server's own refusal, and no
// secret reaches the recording.
func TestPostgresCredentialInjection(t *testing.T) {
	cl := pgtest.Start(t)
	password := func(role string) login.Credential {
		return login.Credential{Password: func(context.Context) (string, error) { return cl.Passwords[role], nil }}
	}
	g := startGateway(t, pgPolicy)
	startAgent(t, g, "db2", "tls", t.TempDir(), agent.Service{Name: "pgauth", Protocol: "postgres", Address: cl.Addr,
		Postgres: &agent.PostgresOptions{
			Roles: map[string]login.Credential{
				pgtest.ScramUser: password(pgtest.ScramUser),
				pgtest.ClearUser: password(pgtest.ClearUser),
				pgtest.CertUser:  {Certificate: &cl.ClientCert},
				// md5_user has no entry: it logs in with no secret.
			},
			TLS: "verify-full", RootCAs: cl.CA, ServerName: "localhost",
		}}).waitConnected(t)
	app := issue(t, g, appID, "app")

	for _, role := range []string{pgtest.ScramUser, pgtest.ClearUser, pgtest.CertUser} {
		t.Run(role, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cfg := pgConfig(t, g, "pgauth", app, role, pgtest.Database)
			cfg.Password = "" // the client has none
			c, err := pgx.ConnectConfig(ctx, cfg)
			if err != nil {
				t.Fatalf("logging in as %s with only the SVID: %v", role, err)
			}
			defer c.Close(ctx)
			var n int
			var user string
			if err := c.QueryRow(ctx, "SELECT count(*), current_user FROM items").Scan(&n, &user); err != nil {
				t.Fatal(err)
			}
			if n != len(pgtest.Items) || user != role {
				t.Fatalf("got %d items as %s, want %d as %s", n, user, len(pgtest.Items), role)
			}
		})
	}

	t.Run("role without a credential", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		c, err := pgx.ConnectConfig(ctx, pgConfig(t, g, "pgauth", app, pgtest.MD5User, pgtest.Database))
		if err == nil {
			c.Close(ctx)
			t.Fatal("md5_user logged in without a password")
		}
		if code := pgCode(err); code != "28P01" && code != "28000" {
			t.Fatalf("got %v, want the server's 28P01 (or 28000)", err)
		}
	})

	t.Run("psql with only the SVID", func(t *testing.T) {
		dir := identityDir(t, g, app)
		conninfo := strings.Replace(libpqTLS(g.addr(), dir, pgtest.ScramUser, pgtest.Database), "host=pg.localhost", "host=pgauth.localhost", 1)
		out, err := psql(t, dir, conninfo, "-w", "-c", "SELECT string_agg(name, ',' ORDER BY id) FROM items")
		if err != nil || out != "apple,banana,cherry" {
			t.Fatalf("got %v, %q; want apple,banana,cherry", err, out)
		}
	})

	t.Run("no secret in the recordings", func(t *testing.T) {
		// 3 roles, the refused md5_user and psql.
		pgRecordings(t, g, appID, func(rs []pgRecording) bool { return len(rs) >= 5 })
		texts := recordingTexts(t, g.srv.Data().RecordingsPath())
		if len(texts) == 0 {
			t.Fatal("no recordings")
		}
		for p, data := range texts {
			for role, pw := range cl.Passwords {
				if strings.Contains(data, pw) {
					t.Errorf("%s holds the password of %s", p, role)
				}
			}
		}
	})
}
