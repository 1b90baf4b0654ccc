// Package sqlite is the embedded store.Store: one SQLite file under the
// gateway's data directory, opened in WAL mode with a busy timeout so that
// the admin commands can write to it while the gateway runs.
//
// The schema is versioned: migrations are an ordered list, each applied once
// in its own transaction and recorded in the schema_migrations table. A
// database migrated by a newer Postern is refused rather than written to.
//
// The SQL is kept portable so that a PostgreSQL store can reuse it: positional
// $N parameters, INSERT … ON CONFLICT, no SQLite-only functions, times stored
// as BIGINT Unix microseconds (the precision of a PostgreSQL timestamp).
// Only the connection pragmas are SQLite's own.
package sqlite
