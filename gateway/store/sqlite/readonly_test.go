package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/postern/postern/gateway/store"
)

// TestOpenReadOnlyAlongsideWriter: an auditor's read-only store sees what
// the gateway writes while it runs, and cannot write.
func TestOpenReadOnlyAlongsideWriter(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	w := openTest(t, path)
	if err := w.IndexSessions(ctx, []store.Session{{ID: "s1", Start: sessionT0, Status: "open"}}); err != nil {
		t.Fatal(err)
	}
	r, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := w.IndexSessions(ctx, []store.Session{{ID: "s2", Start: sessionT0, Status: "open"}}); err != nil {
		t.Fatal(err)
	}
	ss, err := r.Sessions(ctx, store.SessionFilter{})
	if err != nil || !slices.Equal(sessionIDs(ss), []string{"s1", "s2"}) {
		t.Fatalf("got %v, %v", sessionIDs(ss), err)
	}
	if err := r.IndexSessions(ctx, []store.Session{{ID: "s3", Start: sessionT0}}); err == nil {
		t.Fatal("a read-only store wrote")
	}
}

// TestOpenReadOnlySnapshot: a copy of the store file alone, opened as an
// immutable snapshot (what a read-only mount needs), reads without a byte
// or a file added.
func TestOpenReadOnlySnapshot(t *testing.T) {
	ctx := context.Background()
	w, err := Open(ctx, testPath(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := w.IndexSessions(ctx, []store.Session{{ID: "s1", Start: sessionT0, Status: "sealed"}}); err != nil {
		t.Fatal(err)
	}
	w.Close() // checkpoints the log into the file
	b, err := os.ReadFile(w.Path())
	if err != nil {
		t.Fatal(err)
	}
	copyDir := t.TempDir()
	copyPath := filepath.Join(copyDir, "postern.db")
	if err := os.WriteFile(copyPath, b, 0o400); err != nil {
		t.Fatal(err)
	}
	r, err := openReadOnly(ctx, copyPath, "immutable")
	if err != nil {
		t.Fatal(err)
	}
	ss, err := r.Sessions(ctx, store.SessionFilter{})
	r.Close()
	if err != nil || !slices.Equal(sessionIDs(ss), []string{"s1"}) {
		t.Fatalf("got %v, %v", sessionIDs(ss), err)
	}
	entries, _ := os.ReadDir(copyDir)
	after, _ := os.ReadFile(copyPath)
	if len(entries) != 1 || !bytes.Equal(after, b) {
		t.Fatalf("the snapshot changed: %d files, same bytes %v", len(entries), bytes.Equal(after, b))
	}
}

// TestOpenReadOnlyRefusesOtherSchema: a store older than the sessions
// index, or migrated by a newer Postern, is refused rather than misread,
// with one error that says which.
func TestOpenReadOnlyRefusesOtherSchema(t *testing.T) {
	latest := migrations[len(migrations)-1].Version
	for _, tc := range []struct {
		version int
		want    string
		tooNew  bool
	}{
		{version: 1, want: "older than the sessions index"},
		{version: latest + 1, want: "newer than this binary reads", tooNew: true},
	} {
		t.Run(fmt.Sprint(tc.version), func(t *testing.T) {
			path := testPath(t)
			db, err := sql.Open("sqlite", "file:"+path)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at BIGINT); INSERT INTO schema_migrations VALUES ($1, 'x', 0)`, tc.version); err != nil {
				t.Fatal(err)
			}
			db.Close()
			_, err = OpenReadOnly(context.Background(), path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "schema version") != 1 ||
				errors.Is(err, store.ErrSchemaTooNew) != tc.tooNew {
				t.Fatalf("got %v, want one error saying %q", err, tc.want)
			}
		})
	}
}

// oldRow is a sessions row of a file from before identities.
type oldRow struct{ id, identity, service, protocol, status string }

// writeBeforeIdentities makes a database at path at the schema version
// before identities, holding rows.
func writeBeforeIdentities(t *testing.T, path string, rows ...oldRow) {
	t.Helper()
	ctx := context.Background()
	v := slices.IndexFunc(migrations, func(m migration) bool { return m.Version == identitiesVersion })
	old, err := open(ctx, path, migrations[:v])
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	for _, r := range rows {
		if _, err := old.db.ExecContext(ctx, `INSERT INTO sessions (id, identity, source, service, protocol, agent, transport,
			db_name, db_user, start_at, end_at, bytes_in, bytes_out, outcome, events, denies, status)
			VALUES ($1, $2, '', $3, $4, '', '', '', '', 1, 0, 0, 0, '', 1, 0, $5)`, r.id, r.identity, r.service, r.protocol, r.status); err != nil {
			t.Fatal(err)
		}
	}
}

// TestOpenReadOnlyOlderSchema: the audit commands of a newer binary read
// the index of a gateway that has not migrated it yet (an upgrade before
// the restart, an archived data dir); what the later schema adds reads as
// empty, and the file is not migrated.
func TestOpenReadOnlyOlderSchema(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	writeBeforeIdentities(t, path, oldRow{"s1", "spiffe://td/user/ann", "web", "http", "open"})
	r, err := OpenReadOnly(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	checkFilters(t, r, []filterTest{
		{name: "all", want: []string{"s1"}},
		{name: "identity exact", f: store.SessionFilter{Identity: "spiffe://td/user/ann"}, want: []string{"s1"}},
		{name: "identity glob", f: store.SessionFilter{Identity: "*/ann"}, want: []string{"s1"}},
		{name: "identity of nobody", f: store.SessionFilter{Identity: "*/bob"}, want: []string{}},
	})
	if s, err := r.Session(ctx, "s1"); err != nil || s.Identities != nil {
		t.Fatalf("Session: %+v, %v", s, err)
	}
	if v, err := schemaVersion(ctx, r.db); err != nil || v != identitiesVersion-1 {
		t.Fatalf("schema version %d, %v; want %d, not migrated", v, err, identitiesVersion-1)
	}
}

// Upgrading a schema-3 file lists its HTTP and gRPC sessions without an
// identity for a rescan from their recordings; writing a session's row
// takes it off the list; a read-only store of an older file has none.
func TestSessionsToRescan(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	writeBeforeIdentities(t, path,
		oldRow{"bearer-http", "", "svc", "http", "sealed"},
		oldRow{"bearer-grpc", "", "svc", "grpc", "sealed"},
		oldRow{"svid-http", "spiffe://td/user/ann", "svc", "http", "sealed"},
		oldRow{"refused-tcp", "", "svc", "tcp", "sealed"},
		oldRow{"pg", "spiffe://td/user/ann", "svc", "postgres", "sealed"})
	if r, err := OpenReadOnly(ctx, path); err != nil {
		t.Fatal(err)
	} else {
		ids, err := r.SessionsToRescan(ctx)
		r.Close()
		if err != nil || len(ids) != 0 {
			t.Fatalf("read-only store of schema %d: %q, %v; want none", identitiesVersion-1, ids, err)
		}
	}

	d, err := Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	ids, err := d.SessionsToRescan(ctx)
	if err != nil || !slices.Equal(ids, []string{"bearer-grpc", "bearer-http"}) {
		t.Fatalf("after the upgrade: %q, %v; want the HTTP and gRPC sessions without an identity", ids, err)
	}
	if err := d.IndexSessions(ctx, []store.Session{{ID: "bearer-http", Identity: "spiffe://td/workload/ci", Protocol: "http", Status: "sealed"}}); err != nil {
		t.Fatal(err)
	}
	if ids, err := d.SessionsToRescan(ctx); err != nil || !slices.Equal(ids, []string{"bearer-grpc"}) {
		t.Fatalf("after indexing bearer-http: %q, %v; want [bearer-grpc]", ids, err)
	}
	if s, err := d.Session(ctx, "bearer-http"); err != nil || s.Identity != "spiffe://td/workload/ci" {
		t.Fatalf("Session: %+v, %v", s, err)
	}
}
