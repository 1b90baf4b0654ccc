package audit

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols"
)

// RecoverUnsealed seals every recording in dir that a stop cut short (an
// open recording: no seal yet) with a final session.end of outcome
// OutcomeTruncated and a seal, compresses it and the open recordings that
// were sealed but not yet compressed, and returns how many. The gateway
// calls it at start, before it records anything; idx, if not nil, gets the
// sealed sessions' rows. A missing dir has nothing to recover. The count
// includes recordings sealed before an error about another.
//
// The closing record carries the bytes counted by the recording's tcp.data
// records and the time of its last record, so that replay does not wait for
// the downtime. Whatever cannot be read at the end of the file (a write the
// crash cut off) is left out, and the closing record says so. A recording
// whose chain is broken before its end is left alone and reported.
func RecoverUnsealed(ctx context.Context, dir string, key *Key, idx Index) (int, error) {
	restoreSpares(dir)
	files, err := List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // first start: nothing recorded yet
	}
	if err != nil {
		return 0, err
	}
	// Leftovers of rewrites a stop interrupted; the originals are intact.
	for _, pattern := range []string{"*" + compactExt, "*" + OpenExtZst + ".recover"} {
		left, _ := filepath.Glob(filepath.Join(dir, pattern))
		for _, p := range left {
			os.Remove(p)
		}
	}
	var (
		n    int
		errs []error
		rows []store.Session
	)
	for _, f := range files {
		if f.Kind != Unsealed {
			continue
		}
		row, err := archiveOpen(dir, f.Session, key)
		if err != nil {
			errs = append(errs, fmt.Errorf("recovering recording %s: %w", f.Session, err))
			continue
		}
		rows = append(rows, row)
		n++
	}
	if idx != nil && len(rows) > 0 {
		if err := idx.IndexSessions(ctx, rows); err != nil {
			errs = append(errs, fmt.Errorf("indexing recovered sessions: %w", err))
		}
	}
	if n > 0 {
		if err := syncDir(dir); err != nil {
			errs = append(errs, fmt.Errorf("syncing recordings directory: %w", err))
		}
	}
	return n, errors.Join(errs...)
}

// restoreSpares puts back under its open name a spare (see spares) that
// holds a recording of which no other file exists: a crash of the machine
// before a compression synced the directory can keep the open recording's
// new name and lose the sealed file's. The other spares are leftovers,
// which RecoverUnsealed removes.
func restoreSpares(dir string) {
	left, _ := filepath.Glob(filepath.Join(dir, sparePattern))
	for _, p := range left {
		id := firstSession(p)
		if id == "" {
			continue
		}
		if _, err := Find(dir, id); err == nil {
			continue
		}
		os.Rename(p, OpenPath(dir, id)) //nolint:errcheck // if it fails, the spare is removed as before
	}
}

// firstSession returns the session of the first record of the open
// recording at path, or "" if it does not start with one.
func firstSession(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	line, ok, err := readLine(bufio.NewReader(f), nil)
	var r Record
	if !ok || err != nil || json.Unmarshal(line, &r) != nil || r.Seq != 0 || !ValidSessionID(r.Session) {
		return ""
	}
	return r.Session
}

// archiveOpen rewrites the open recording of id in dir as its sealed file,
// compressed (see compressor): its readable records, then (unless it had
// ended) a truncated session.end, then (unless it was sealed) the seal.
// RecoverUnsealed calls it for the recordings a stop left open. The sealed
// file replaces the open one only after it was written and synced; a
// recording whose chain is broken is left as it is. It returns the
// session's index row.
func archiveOpen(dir, id string, key *Key) (store.Session, error) {
	open := OpenPath(dir, id)
	src, err := os.Open(open)
	if errors.Is(err, fs.ErrNotExist) {
		open = filepath.Join(dir, id+OpenExtZst)
		src, err = os.Open(open)
	}
	if err != nil {
		return store.Session{}, err
	}
	defer src.Close()
	path := Path(dir, id)
	c, err := newCompressor(dir, id, nil)
	if err != nil {
		return store.Session{}, err
	}
	defer c.close()
	var werr error
	put := func(b []byte) {
		if werr == nil {
			_, werr = c.Write(b)
		}
	}

	s := &session{id: id, row: store.Session{ID: id, Status: StatusOpen}}
	var (
		end   = protocols.SessionEnd{Outcome: OutcomeTruncated}
		first time.Time
	)
	t, rerr := readFrom(src, Unsealed, id, nil, func(r Record, line []byte) error {
		if first.IsZero() {
			first = r.Time
		}
		put(append(line, '\n')) // line is the reader's buffer, reused
		s.seq = r.Seq + 1
		s.prev.after(line)
		s.indexRecord(r)
		if r.Type == protocols.TCPData {
			var d protocols.TCPDataEvent
			if json.Unmarshal(r.Data, &d) == nil {
				switch d.Direction {
				case protocols.ClientToService:
					end.BytesIn += d.Bytes
				case protocols.ServiceToClient:
					end.BytesOut += d.Bytes
				}
			}
		}
		return werr
	})
	if rerr != nil && t.cut == nil {
		return store.Session{}, rerr
	}
	if t.sealed && t.cut != nil {
		return store.Session{}, fmt.Errorf("bytes after the seal: %w", t.cut)
	}
	if _, err := os.Stat(path); err == nil {
		// A stop between the rename below and the removal of the open
		// file: the open one is a leftover if both hold the same.
		if err := sameAs(path, id, t); err != nil || !t.sealed {
			return store.Session{}, errors.New("both an open and a sealed recording exist, and differ; leaving both")
		}
		s.row.Events = s.seq
		return s.row, os.Remove(open)
	}
	at := t.last
	if at.IsZero() {
		fi, err := src.Stat()
		if err != nil {
			return store.Session{}, err
		}
		at = fi.ModTime().UTC()
	}
	if !t.ended {
		end.Error = "recording cut short: the gateway stopped before the session ended"
		if t.cut != nil {
			end.Error += fmt.Sprintf("; what followed record %d could not be read (%v) and was left out", t.next-1, t.cut)
		}
		if !first.IsZero() {
			end.Duration = at.Sub(first).Milliseconds()
		}
		data, err := json.Marshal(&end)
		if err != nil {
			return store.Session{}, err
		}
		rec := Record{V: Version, Seq: s.seq, Time: at, Session: id, Type: protocols.SessionEnded, Data: data}
		if err := s.append(rec); err != nil {
			return store.Session{}, err
		}
		s.indexRecord(rec)
	}
	if !t.sealed {
		if err := s.append(Record{V: Version, Seq: s.seq, Time: at, Session: id, Type: SealType,
			Data: key.seal(id, s.seq, s.prev.String())}); err != nil {
			return store.Session{}, err
		}
	}
	s.row.Events = s.seq
	put(s.pending)
	if werr == nil {
		werr = c.commit(open)
	}
	if werr != nil {
		return store.Session{}, fmt.Errorf("writing sealed recording: %w", werr)
	}
	return s.row, nil
}

// sameAs checks that the recording at path reads back as t, sealed.
func sameAs(path, id string, t tail) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	back, err := readFrom(f, Sealed, id, nil, nil)
	if err == nil && (back.next != t.next || back.prev != t.prev || !back.sealed) {
		err = errors.New("the rewritten recording reads back differently")
	}
	return err
}

// indexRecord updates s's index row from a record read back.
func (s *session) indexRecord(r Record) {
	var data any
	switch r.Type {
	case protocols.SessionStarted:
		data = &protocols.SessionStart{}
	case protocols.SessionEnded:
		data = &protocols.SessionEnd{}
	case protocols.AuthzDenied:
		data = &protocols.AuthzDeny{}
	case protocols.HTTPRequested:
		data = &protocols.HTTPRequestEvent{}
	case protocols.GRPCCalled:
		data = &protocols.GRPCCallEvent{}
	default:
		s.row.Events = s.seq
		return
	}
	if json.Unmarshal(r.Data, data) != nil {
		return
	}
	s.index(protocols.Event{Session: r.Session, Time: r.Time, Type: r.Type, Data: data})
}
