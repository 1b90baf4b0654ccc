package audit

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/postern/postern/protocols"
)

// RecoverUnsealed closes every recording in dir that has no session.end
// with a final session.end record of outcome OutcomeTruncated, continuing
// its hash chain, and returns how many it closed. The gateway calls it at
// start, before it records anything. A missing dir has nothing to close.
// The count includes recordings closed before an error about another.
//
// The closing record carries the bytes counted by the recording's tcp.data
// records and the time of its last record, so that replay does not wait for
// the downtime. An incomplete last line (a write the crash cut off) is
// removed first, and the closing record says so. A recording that is
// broken elsewhere is left alone and reported in the returned error.
func RecoverUnsealed(dir string) (int, error) {
	ids, err := List(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, nil // first start: nothing recorded yet
	}
	if err != nil {
		return 0, err
	}
	var (
		n    int
		errs []error
	)
	for _, id := range ids {
		closed, err := recoverOne(Path(dir, id), id)
		if err != nil {
			errs = append(errs, fmt.Errorf("recovering recording %s: %w", id, err))
		}
		if closed {
			n++
		}
	}
	return n, errors.Join(errs...)
}

func recoverOne(path, id string) (bool, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return false, err
	}
	defer f.Close()

	var (
		end   = protocols.SessionEnd{Outcome: OutcomeTruncated}
		first time.Time
	)
	t, err := readFrom(f, id, func(r Record) error {
		if first.IsZero() {
			first = r.Time
		}
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
		return nil
	})
	if err != nil && (t.torn == 0 || t.ended) {
		return false, err
	}
	if t.ended {
		return false, nil
	}
	end.Error = "recording cut short: the gateway stopped before the session ended"
	if t.torn > 0 {
		if err := f.Truncate(t.size); err != nil {
			return false, fmt.Errorf("removing incomplete record: %w", err)
		}
		end.Error += fmt.Sprintf("; an incomplete last record (%d bytes) was removed", t.torn)
	}
	at := t.last
	if at.IsZero() {
		fi, err := f.Stat()
		if err != nil {
			return false, err
		}
		at = fi.ModTime()
	}
	if !first.IsZero() {
		end.Duration = at.Sub(first).Milliseconds()
	}
	data, err := json.Marshal(end)
	if err != nil {
		return false, err
	}
	line, err := encode(Record{
		V:       Version,
		Seq:     t.next,
		Time:    at.UTC(),
		Session: id,
		Type:    protocols.SessionEnded,
		Data:    data,
		Prev:    t.prev,
	})
	if err != nil {
		return false, err
	}
	if _, err := f.WriteAt(append(line, '\n'), t.size); err != nil {
		return false, fmt.Errorf("writing closing record: %w", err)
	}
	if err := f.Sync(); err != nil {
		return false, fmt.Errorf("syncing recording: %w", err)
	}
	return true, nil
}
