package sqlite

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/gateway/store"
)

func TestMigrationsNumbered(t *testing.T) {
	for i, m := range migrations {
		if m.Version != i+1 {
			t.Errorf("migration %d (%s): got version %d, want %d", i, m.Name, m.Version, i+1)
		}
		if len(m.Stmts) == 0 {
			t.Errorf("migration %d (%s) has no statements", m.Version, m.Name)
		}
	}
}

func countMigrations(t *testing.T, d *DB) int {
	t.Helper()
	var n int
	if err := d.db.QueryRow(`SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}

func TestReopenDoesNotReapply(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	for i := range 3 {
		d, err := Open(ctx, path)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		if got, want := countMigrations(t, d), len(migrations); got != want {
			t.Fatalf("open %d: got %d migration rows, want %d", i, got, want)
		}
		v, err := d.SchemaVersion(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if v != LatestSchemaVersion() {
			t.Fatalf("open %d: got version %d, want %d", i, v, LatestSchemaVersion())
		}
		d.Close()
	}
}

// TestMigrationAppliedOnce uses a migration that would leave a second row
// if it ran twice, and a later binary that adds a migration.
func TestMigrationAppliedOnce(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	v1 := []migration{{Version: 1, Name: "t", Stmts: []string{
		`CREATE TABLE t (n INTEGER)`,
		`INSERT INTO t (n) VALUES (1)`,
	}}}
	v2 := append(v1, migration{Version: 2, Name: "t2", Stmts: []string{`INSERT INTO t (n) VALUES (2)`}})
	for i, ms := range [][]migration{v1, v1, v2, v2} {
		d, err := open(ctx, path, ms)
		if err != nil {
			t.Fatalf("open %d: %v", i, err)
		}
		var sum, count int
		if err := d.db.QueryRow(`SELECT COALESCE(SUM(n), 0), COUNT(*) FROM t`).Scan(&sum, &count); err != nil {
			t.Fatal(err)
		}
		wantSum, wantCount := 1, 1
		if len(ms) == 2 {
			wantSum, wantCount = 3, 2
		}
		if sum != wantSum || count != wantCount {
			t.Fatalf("open %d: got sum %d over %d rows, want %d over %d", i, sum, count, wantSum, wantCount)
		}
		d.Close()
	}
}

func TestFailedMigrationRollsBack(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	bad := []migration{{Version: 1, Name: "bad", Stmts: []string{
		`CREATE TABLE half (n INTEGER)`,
		`THIS IS NOT SQL`,
	}}}
	if _, err := open(ctx, path, bad); err == nil {
		t.Fatal("bad migration: got nil error, want one")
	}
	good := []migration{{Version: 1, Name: "good", Stmts: []string{`CREATE TABLE half (n INTEGER)`}}}
	d, err := open(ctx, path, good)
	if err != nil {
		t.Fatalf("good migration after a failed one: %v", err)
	}
	defer d.Close()
	if v, _ := d.SchemaVersion(ctx); v != 1 {
		t.Fatalf("got version %d, want 1", v)
	}
}

func TestSchemaTooNewRefused(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	d := openTest(t, path)
	newer := LatestSchemaVersion() + 1
	if _, err := d.db.Exec(`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, 'future', 0)`, newer); err != nil {
		t.Fatal(err)
	}
	d.Close()

	_, err := Open(ctx, path)
	if !errors.Is(err, store.ErrSchemaTooNew) {
		t.Fatalf("got %v, want %v", err, store.ErrSchemaTooNew)
	}
	for _, want := range []string{fmt.Sprint(newer), fmt.Sprint(LatestSchemaVersion()), path} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

// TestMigrateToSessions opens a database written at schema version 2, the
// one before the sessions index, with this binary: the data is kept and
// sessions can be indexed.
func TestMigrateToSessions(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	v := slices.IndexFunc(migrations, func(m migration) bool { return m.Name == "sessions" })
	if v < 0 {
		t.Fatal("no sessions migration")
	}
	old, err := open(ctx, path, migrations[:v])
	if err != nil {
		t.Fatalf("opening at version %d: %v", v, err)
	}
	t0 := time.Now().Truncate(time.Microsecond).UTC()
	key := store.APIKey{KeyID: "k1", ID: "spiffe://td/workload/ci", Groups: []string{"ci"},
		SecretHash: []byte{1, 2}, CreatedAt: t0}
	agent := store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", Services: []string{"pg=postgres"}, LastSeen: t0}
	steps := map[string]error{
		"CreateAPIKey": old.CreateAPIKey(ctx, key),
		"UpsertAgent":  old.UpsertAgent(ctx, agent),
		"UseToken":     old.UseToken(ctx, "tok", "db1", t0.Add(time.Hour)),
	}
	for name, err := range steps {
		if err != nil {
			t.Fatalf("%s at version %d: %v", name, v, err)
		}
	}
	if _, err := old.db.ExecContext(ctx, `SELECT 1 FROM sessions`); err == nil {
		t.Fatalf("version %d already has a sessions table", v)
	}
	old.Close()

	d := openTest(t, path)
	if got, _ := d.SchemaVersion(ctx); got != LatestSchemaVersion() {
		t.Fatalf("got version %d, want %d", got, LatestSchemaVersion())
	}
	checks := []struct {
		name  string
		check func() error
	}{
		{"api key kept", func() error {
			got, err := d.APIKey(ctx, "k1")
			if err == nil && !apiKeyEqual(got, key) {
				err = fmt.Errorf("got %+v, want %+v", got, key)
			}
			return err
		}},
		{"agent kept", func() error {
			got, err := d.Agent(ctx, "db1")
			if err == nil && !agentEqual(got, store.Agent{Name: agent.Name, ID: agent.ID,
				Services: agent.Services, LastSeen: t0, FirstSeen: t0}) {
				err = fmt.Errorf("got %+v", got)
			}
			return err
		}},
		{"used token kept", func() error {
			if err := d.UseToken(ctx, "tok", "db1", t0.Add(time.Hour)); !errors.Is(err, store.ErrTokenUsed) {
				return fmt.Errorf("got %v, want %v", err, store.ErrTokenUsed)
			}
			return nil
		}},
		{"sessions indexed", func() error {
			s := store.Session{ID: "s1", Identity: "spiffe://td/user/ann", Start: t0, Status: "open"}
			if err := d.IndexSessions(ctx, []store.Session{s}); err != nil {
				return err
			}
			got, err := d.Session(ctx, "s1")
			if err == nil && !sessionEqual(got, s) {
				err = fmt.Errorf("got %+v, want %+v", got, s)
			}
			return err
		}},
	}
	for _, c := range checks {
		t.Run(c.name, func(t *testing.T) {
			if err := c.check(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
