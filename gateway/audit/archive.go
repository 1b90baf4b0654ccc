package audit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/postern/postern/gateway/store"
)

// Lister is the part of the store that indexes sessions; store.Store is one.
type Lister interface {
	Sessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error)
	Session(ctx context.Context, id string) (store.Session, error)
}

// Archive is what an auditor reads: a recordings directory, the index of
// its sessions when there is one, and the public keys to verify seals.
// With no index (a copy of the recordings only), sessions are listed by
// reading every recording.
type Archive struct {
	Dir   string
	Index Lister // nil: read the recordings
	Keys  Keys   // nil: Verify refuses
}

// Sessions returns the sessions that match f, newest first.
func (a *Archive) Sessions(ctx context.Context, f store.SessionFilter) ([]store.Session, error) {
	if a.Index != nil {
		ss, err := a.Index.Sessions(ctx, f)
		if err != nil {
			return nil, fmt.Errorf("listing sessions: %w", err)
		}
		return ss, nil
	}
	files, err := List(a.Dir)
	if err != nil {
		return nil, err
	}
	var out []store.Session
	for i, file := range files {
		if i > 0 && files[i-1].Session == file.Session {
			continue // the sealed copy was listed first
		}
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		row, _ := scanRow(file) // a broken recording is listed with what it had
		if f.Matches(row) {
			out = append(out, row)
		}
	}
	slices.SortFunc(out, func(x, y store.Session) int {
		if c := y.Start.Compare(x.Start); c != 0 {
			return c
		}
		return strings.Compare(x.ID, y.ID)
	})
	if f.Limit > 0 && len(out) > f.Limit {
		out = out[:f.Limit]
	}
	return out, nil
}

// Session returns the index row of session id (read from its recording
// when there is no index or the index does not know it) and its file.
func (a *Archive) Session(ctx context.Context, id string) (store.Session, File, error) {
	file, err := Find(a.Dir, id)
	if err != nil {
		return store.Session{}, File{}, err
	}
	if a.Index != nil {
		row, err := a.Index.Session(ctx, id)
		if err == nil {
			return row, file, nil
		}
		if !errors.Is(err, store.ErrNotFound) {
			return store.Session{}, File{}, fmt.Errorf("reading session %s from the index: %w", id, err)
		}
	}
	row, err := scanRow(file)
	return row, file, err
}

// Verify checks the recording of session id with the archive's keys. An
// unsealed recording of a session that the index says is still open
// verifies as far as it goes, with Result.Open set.
func (a *Archive) Verify(ctx context.Context, id string) (Result, error) {
	return a.VerifyEach(ctx, id, nil)
}

// VerifyEach is Verify that also calls fn (if not nil) with each record as
// it reads, as Read does: one pass for what shows and checks a recording.
func (a *Archive) VerifyEach(ctx context.Context, id string, fn func(Record) error) (Result, error) {
	if a.Keys == nil {
		return Result{}, errors.New("verifying recording: no audit public key")
	}
	file, err := Find(a.Dir, id)
	if err != nil {
		return Result{}, err
	}
	var each func(Record, []byte) error
	if fn != nil {
		each = func(r Record, _ []byte) error { return fn(r) }
	}
	res, err := readFile(file.Path, a.Keys, each)
	if errors.Is(err, ErrUnsealed) && file.Kind == Unsealed && a.Index != nil {
		if row, ierr := a.Index.Session(ctx, id); ierr == nil && row.Status == StatusOpen {
			res.Open = true
			return res, nil
		}
	}
	return res, err
}

// scanRow makes the index row of a recording by reading it.
func scanRow(file File) (store.Session, error) {
	row := store.Session{ID: file.Session, Status: StatusOpen}
	sum, err := Summarize(file.Path)
	if sum.Start != nil {
		d := sum.Start
		row.Identity, row.Source, row.Service = d.Identity, d.Source, d.Service
		row.Protocol, row.Agent, row.Transport = d.Protocol, d.Agent, d.Transport
		row.Database, row.DBUser = d.Database, d.User
	}
	for _, id := range sum.Identities {
		row.AddIdentity(id)
	}
	row.Start = sum.First
	if sum.End != nil {
		row.End = sum.Last
		row.BytesIn, row.BytesOut, row.Outcome = sum.End.BytesIn, sum.End.BytesOut, sum.End.Outcome
	}
	if sum.Sealed || file.Kind == V1 && sum.Ended {
		row.Status = StatusSealed
	}
	row.Events = int64(sum.Records)
	row.Denies = int64(len(sum.Denies))
	return row, err
}
