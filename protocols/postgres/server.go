package postgres

import (
	"encoding/hex"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/protocols"
)

// fromServer relays the server's messages to the client. Rows and COPY data
// pass through unread; the messages that end a query are read to complete
// its audit record, and the error a poison caused is replaced by the
// refusal it stands for.
func (s *session) fromServer() error {
	defer s.abandon()
	var buf []byte
	capture := s.cfg.CaptureRows > 0
	for {
		if s.sr.Buffered() == 0 {
			if err := s.cw.Flush(); err != nil {
				return err
			}
		}
		h, err := readHeader(s.sr, maxServerMessage)
		if err != nil {
			return err
		}
		inspect := false
		switch h.typ {
		case 'E', 'C', 'Z', 'S', 'I', 's':
			inspect = h.n <= maxInspected
		case 'T', 'D', 'n':
			inspect = capture && h.n <= maxInspected && s.capturing()
		}
		if !inspect {
			s.out.Add(int64(h.n) + 5)
			if err := writeHeader(s.cw, h); err != nil {
				return err
			}
			if err := copyBody(s.cw, s.sr, h.n); err != nil {
				return err
			}
			continue
		}
		if buf, err = readBody(s.sr, h, buf); err != nil {
			return err
		}
		out := s.serverMessage(h.typ, buf)
		if out != nil {
			s.out.Add(int64(len(out)))
			if _, err := s.cw.Write(out); err != nil {
				return err
			}
			continue
		}
		s.out.Add(int64(h.n) + 5)
		if err := writeMessage(s.cw, h.typ, buf); err != nil {
			return err
		}
	}
}

// serverMessage follows one inspected message; it returns the encoded
// message to send instead, or nil to send the message as it came. The
// queries it completes are recorded after the queue's lock is let go.
func (s *session) serverMessage(typ byte, body []byte) []byte {
	out := s.follow(typ, body)
	s.recordFinished()
	return out
}

// recordFinished records the queries complete has set aside.
func (s *session) recordFinished() {
	s.mu.Lock()
	done := s.finished
	s.finished = nil
	s.mu.Unlock()
	for _, ev := range done {
		s.record(ev)
	}
}

func (s *session) follow(typ byte, body []byte) []byte {
	s.mu.Lock()
	defer s.mu.Unlock()
	var f *item
	if len(s.queue) > 0 {
		f = s.queue[0]
	}
	switch typ {
	case 'E':
		var e pgproto3.ErrorResponse
		if e.Decode(body) != nil {
			return nil
		}
		if f == nil {
			return nil
		}
		if f.kind == itemPoison && e.Code == "26000" && strings.Contains(e.Message, f.poison) {
			s.queue = s.queue[1:]
			b, _ := f.deny.Encode(nil)
			return b
		}
		switch f.kind {
		case itemQuery:
			if f.ev.Code == "" {
				f.ev.Code, f.ev.Error = e.Code, e.Message
			}
		case itemExecute:
			f.ev.Code, f.ev.Error = e.Code, e.Message
			s.queue = s.queue[1:]
			s.complete(f)
			s.skipSegment(e.Code)
		default:
			// An error of a Parse, Bind or Describe that no Execute of
			// ours explains: the server skips the rest until Sync.
			s.skipSegment(e.Code)
			sql := "(extended protocol)"
			for _, it := range s.queue {
				if it.kind == itemSync {
					if it.parse != "" {
						sql = it.parse
					}
					break
				}
			}
			s.finished = append(s.finished, &protocols.PostgresQueryEvent{SQL: sql, Protocol: "extended",
				Verdict: protocols.VerdictAllow, Code: e.Code, Error: e.Message})
		}
	case 'C':
		var c pgproto3.CommandComplete
		if c.Decode(body) != nil || f == nil {
			return nil
		}
		tag := string(c.CommandTag)
		switch f.kind {
		case itemQuery:
			f.ev.Completed = append(f.ev.Completed, tag)
			f.ev.Rows += tagRows(tag)
		case itemExecute:
			f.ev.Completed = append(f.ev.Completed, tag)
			f.ev.Rows += tagRows(tag)
			s.queue = s.queue[1:]
			s.complete(f)
		}
	case 'I', 's':
		if f != nil && f.kind == itemExecute {
			if typ == 's' {
				f.ev.Completed = append(f.ev.Completed, "(portal suspended)")
			}
			s.queue = s.queue[1:]
			s.complete(f)
		}
	case 'Z':
		for len(s.queue) > 0 {
			it := s.queue[0]
			s.queue = s.queue[1:]
			if it.kind == itemExecute {
				s.notRun(it, "")
			}
			if it.kind == itemQuery {
				s.complete(it)
			}
			if it.kind == itemQuery || it.kind == itemSync {
				break
			}
		}
	case 'S':
		var p pgproto3.ParameterStatus
		if p.Decode(body) == nil {
			s.watchParameter(p.Name, p.Value)
		}
	case 'n':
		if f != nil && f.kind == itemDescribe {
			s.queue = s.queue[1:]
		}
	case 'T':
		var rd pgproto3.RowDescription
		if rd.Decode(body) != nil || f == nil {
			return nil
		}
		names := make([]string, len(rd.Fields))
		bin := make([]bool, len(rd.Fields))
		for i, fd := range rd.Fields {
			names[i], bin[i] = string(fd.Name), fd.Format == 1
		}
		switch {
		case f.kind == itemDescribe:
			s.queue = s.queue[1:]
			if f.stmt != nil {
				f.stmt.cols = names
			}
		case f.ev != nil && f.ev.Columns == nil:
			f.ev.Columns, f.cols = names, bin
		}
	case 'D':
		var dr pgproto3.DataRow
		if dr.Decode(body) != nil || f == nil || f.ev == nil || len(f.ev.Result) >= s.cfg.CaptureRows {
			return nil
		}
		if f.ev.Columns == nil && f.stmt != nil && f.stmt.cols != nil {
			// Described before the Execute; the Bind chose the formats.
			f.ev.Columns = f.stmt.cols
			f.cols = make([]bool, len(f.stmt.cols))
			for i := range f.cols {
				switch {
				case len(f.format) == 1:
					f.cols[i] = f.format[0] == 1
				case i < len(f.format):
					f.cols[i] = f.format[i] == 1
				}
			}
		}
		row := make([]*string, len(dr.Values))
		for i, v := range dr.Values {
			if v == nil {
				continue
			}
			var t string
			if i < len(f.cols) && f.cols[i] {
				t = `\x` + hex.EncodeToString(v[:min(len(v), maxParamLen/2)])
			} else {
				t = string(v[:min(len(v), maxParamLen)])
			}
			row[i] = &t
		}
		f.ev.Result = append(f.ev.Result, row)
	}
	return nil
}

// capturing reports whether the query being answered still wants rows.
func (s *session) capturing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.queue) == 0 {
		return false
	}
	f := s.queue[0]
	return f.kind == itemDescribe || (f.kind == itemQuery || f.kind == itemExecute) && len(f.ev.Result) < s.cfg.CaptureRows
}

// skipSegment drops what the server skips after an error: every Execute
// and poison up to the next Sync. Called with s.mu held.
func (s *session) skipSegment(code string) {
	for len(s.queue) > 0 {
		it := s.queue[0]
		if it.kind == itemSync || it.kind == itemQuery {
			return
		}
		s.queue = s.queue[1:]
		if it.kind == itemExecute {
			s.notRun(it, code)
		}
	}
}

// notRun records an Execute the server skipped.
func (s *session) notRun(it *item, code string) {
	it.ev.Error = "not executed: an earlier message of the pipeline failed"
	if code != "" {
		it.ev.Error += " with " + code
	}
	s.complete(it)
}

// complete sets a finished query aside to be recorded. Called with s.mu
// held.
func (s *session) complete(it *item) {
	if !it.start.IsZero() {
		it.ev.Duration = math.Round(float64(time.Since(it.start))/float64(time.Millisecond)*1000) / 1000
	}
	s.finished = append(s.finished, it.ev)
}

func (s *session) record(ev *protocols.PostgresQueryEvent) {
	s.cfg.Recorder.Record(protocols.Event{Session: s.cfg.Session, Time: time.Now(), Type: protocols.PostgresQuery, Data: ev})
}

// abandon records the queries the server never answered because the
// session ended first.
func (s *session) abandon() {
	defer s.recordFinished()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, it := range s.queue {
		if it.kind == itemQuery || it.kind == itemExecute {
			if it.ev.Error == "" {
				it.ev.Error = "the session ended before the server answered"
			}
			s.complete(it)
		}
	}
	s.queue = nil
}

// tagRows returns the row count at the end of a command tag ("SELECT 3",
// "INSERT 0 1"), or 0.
func tagRows(tag string) int64 {
	i := strings.LastIndexByte(tag, ' ')
	if i < 0 {
		return 0
	}
	n, err := strconv.ParseInt(tag[i+1:], 10, 64)
	if err != nil {
		return 0
	}
	return n
}
