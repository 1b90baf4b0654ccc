package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"slices"
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

// TestOpenReadOnlyRefusesOtherSchema: a store this binary did not migrate
// is refused rather than misread.
func TestOpenReadOnlyRefusesOtherSchema(t *testing.T) {
	path := testPath(t)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT, applied_at BIGINT); INSERT INTO schema_migrations VALUES (1, 'first', 0)`); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if _, err := OpenReadOnly(context.Background(), path); err == nil {
		t.Fatal("opened a store at schema version 1")
	}
}
