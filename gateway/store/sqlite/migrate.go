package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"github.com/postern/postern/gateway/store"
)

// migrate brings db to the last version of ms, applying each missing
// migration in its own transaction. It refuses a database whose version is
// past the last of ms.
func migrate(ctx context.Context, db *sql.DB, ms []migration) error {
	if _, err := db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
		version    INTEGER PRIMARY KEY,
		name       TEXT NOT NULL,
		applied_at BIGINT NOT NULL
	)`); err != nil {
		return fmt.Errorf("creating schema_migrations: %w", err)
	}
	latest := 0
	if len(ms) > 0 {
		latest = ms[len(ms)-1].Version
	}
	v, err := schemaVersion(ctx, db)
	if err != nil {
		return err
	}
	if v > latest {
		return fmt.Errorf("database is at schema version %d, this binary knows versions up to %d (upgrade Postern): %w",
			v, latest, store.ErrSchemaTooNew)
	}
	for i, m := range ms {
		if m.Version != i+1 {
			return fmt.Errorf("migration %q has version %d, want %d", m.Name, m.Version, i+1)
		}
		if m.Version <= v {
			continue
		}
		if err := apply(ctx, db, m); err != nil {
			return err
		}
	}
	return nil
}

// schemaVersion returns the highest applied migration version, 0 if none.
func schemaVersion(ctx context.Context, q interface {
	QueryRowContext(ctx context.Context, query string, args ...any) *sql.Row
}) (int, error) {
	var v int
	if err := q.QueryRowContext(ctx, `SELECT COALESCE(MAX(version), 0) FROM schema_migrations`).Scan(&v); err != nil {
		return 0, fmt.Errorf("reading schema version: %w", err)
	}
	return v, nil
}

// apply runs m in one transaction unless another process applied it first.
func apply(ctx context.Context, db *sql.DB, m migration) (err error) {
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
	}
	defer func() {
		if err != nil {
			tx.Rollback()
		}
	}()
	v, err := schemaVersion(ctx, tx)
	if err != nil {
		return err
	}
	if v >= m.Version {
		return tx.Commit() // another process got there first
	}
	for _, s := range m.Stmts {
		if _, err = tx.ExecContext(ctx, s); err != nil {
			return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
		}
	}
	if _, err = tx.ExecContext(ctx,
		`INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)`,
		m.Version, m.Name, micros(time.Now())); err != nil {
		return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
	}
	if err = tx.Commit(); err != nil {
		return fmt.Errorf("applying migration %d (%s): %w", m.Version, m.Name, err)
	}
	return nil
}

// SchemaVersion reports the schema version of the open database.
func (d *DB) SchemaVersion(ctx context.Context) (int, error) {
	return schemaVersion(ctx, d.db)
}

// LatestSchemaVersion is the schema version this binary migrates to.
func LatestSchemaVersion() int { return migrations[len(migrations)-1].Version }
