package audit

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// rescanIndex is a memIndex with a list of sessions to rescan, which
// IndexSessions clears as the store does.
type rescanIndex struct {
	memIndex
	mu     sync.Mutex
	rescan []string
}

func (r *rescanIndex) IndexSessions(ctx context.Context, ss []store.Session) error {
	r.mu.Lock()
	for _, s := range ss {
		r.rescan = slices.DeleteFunc(r.rescan, func(id string) bool { return id == s.ID })
	}
	r.mu.Unlock()
	return r.memIndex.IndexSessions(ctx, ss)
}

func (r *rescanIndex) SessionsToRescan(context.Context) ([]string, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.rescan), nil
}

func (r *rescanIndex) Session(_ context.Context, id string) (store.Session, error) {
	if row, ok := r.get(id); ok {
		return row, nil
	}
	return store.Session{}, store.ErrNotFound
}

// A row an older version wrote for a session of bearer tokens (no
// identity) is made again from the recording, once; a session listed
// without a recording keeps its row and leaves the list.
func TestRescan(t *testing.T) {
	const ann = "spiffe://postern.local/workload/ann"
	dir := t.TempDir()
	l, _ := openLog(t, dir, Options{})
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for _, e := range []protocols.Event{
		{Session: "bearer", Time: at(0), Type: protocols.SessionStarted,
			Data: &protocols.SessionStart{Source: "127.0.0.1:40000", Service: "web", Protocol: protocols.HTTP}},
		{Session: "bearer", Time: at(1), Type: protocols.HTTPRequested,
			Data: &protocols.HTTPRequestEvent{Method: "GET", Path: "/", Identity: ann, Auth: protocols.AuthAPIKey, Status: 200}},
		{Session: "bearer", Time: at(2), Type: protocols.SessionEnded,
			Data: &protocols.SessionEnd{Outcome: protocols.OutcomeOK}},
	} {
		l.Record(e)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	old := store.Session{ID: "bearer", Service: "web", Protocol: protocols.HTTP, Status: StatusSealed}
	gone := store.Session{ID: "gone", Service: "web", Protocol: protocols.HTTP, Status: StatusSealed, Events: 7}
	idx := &rescanIndex{}
	idx.memIndex.IndexSessions(ctx, []store.Session{old, gone})
	idx.rescan = []string{"bearer", "gone", "pruned"}

	n, err := Rescan(ctx, dir, idx)
	if err != nil || n != 1 {
		t.Fatalf("Rescan: %d, %v; want 1 row made again", n, err)
	}
	if row, _ := idx.get("bearer"); row.Identity != ann || row.Events != 4 || row.Status != StatusSealed {
		t.Fatalf("rescanned row %+v, want identity %s, 4 records, sealed", row, ann)
	}
	if row, _ := idx.get("gone"); row.Events != 7 {
		t.Fatalf("row without a recording became %+v, want it kept", row)
	}
	if left, _ := idx.SessionsToRescan(ctx); !slices.Equal(left, []string{"pruned"}) {
		t.Fatalf("left to rescan %q, want only the session without a row", left)
	}
	if n, err := Rescan(ctx, dir, idx); err != nil || n != 0 {
		t.Fatalf("second Rescan: %d, %v; want nothing to do", n, err)
	}
}
