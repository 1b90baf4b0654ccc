package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/postern/postern/gateway/store"
)

// RescanIndex is the index as Rescan uses it.
type RescanIndex interface {
	Index
	SessionsToRescan(ctx context.Context) ([]string, error)
	Session(ctx context.Context, id string) (store.Session, error)
}

// rescanBatch is how many rows Rescan writes in one transaction.
const rescanBatch = 500

// Rescan makes again, from their recordings in dir, the index rows of the
// sessions the index lists for it (rows an older version wrote without
// something rows now hold: the identities of a session of bearer tokens),
// and returns how many it made. The gateway calls it at start, after
// RecoverUnsealed. A session whose recording is not in dir, or cannot be
// read to its end, keeps the row it has; either way it leaves the list, so
// the work is done once.
func Rescan(ctx context.Context, dir string, idx RescanIndex) (int, error) {
	ids, err := idx.SessionsToRescan(ctx)
	if err != nil || len(ids) == 0 {
		return 0, err
	}
	var (
		n    int
		rows []store.Session
		errs []error
	)
	flush := func() {
		if err := idx.IndexSessions(ctx, rows); err != nil {
			errs = append(errs, fmt.Errorf("indexing rescanned sessions: %w", err))
		}
		rows = rows[:0]
	}
	add := func(row store.Session) {
		if rows = append(rows, row); len(rows) == rescanBatch {
			flush()
		}
	}
	for _, id := range ids {
		if f, err := Find(dir, id); err == nil {
			row, err := scanRow(f)
			if err == nil {
				add(row)
				n++
				continue
			}
			errs = append(errs, fmt.Errorf("rescanning recording %s: %w", id, err))
		}
		// No recording here, or one that cannot be read to its end: the
		// row stays as it is.
		row, err := idx.Session(ctx, id)
		if errors.Is(err, store.ErrNotFound) {
			continue // no row to make again
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("rescanning session %s: %w", id, err))
			continue
		}
		add(row)
	}
	if len(rows) > 0 {
		flush()
	}
	return n, errors.Join(errs...)
}
