package sqlite

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

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
