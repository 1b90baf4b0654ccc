package postgres

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/classify"
)

// fromClient reads the client's messages, decides each statement and
// forwards what is allowed. A refused message is replaced by a Bind of a
// statement that does not exist (a "poison"), so that the server itself
// fails at exactly that place in the stream and skips the rest until Sync,
// as it would for its own error; the server loop then shows the client the
// refusal in place of that error. It returns errClientGone when the client
// ends the session, another error for a protocol violation.
func (s *session) fromClient(ctx context.Context) error {
	for {
		if s.cr.Buffered() == 0 {
			if err := s.sw.Flush(); err != nil {
				return errClientGone
			}
		}
		h, err := readHeader(s.cr, s.cfg.MaxMessage)
		if err != nil {
			if errors.Is(err, ErrMessageTooLarge) {
				return err
			}
			return errClientGone
		}
		s.in.Add(int64(h.n) + 5)
		if h.typ == 'd' { // CopyData: streamed, never held whole
			if err := writeHeader(s.sw, h); err != nil {
				return errClientGone
			}
			if err := copyBody(s.sw, s.cr, h.n); err != nil {
				return errClientGone
			}
			continue
		}
		body, err := readBody(s.cr, h, s.buf)
		if err != nil {
			return errClientGone
		}
		if cap(body) <= 64<<10 {
			s.buf = body
		}
		if s.discarding && h.typ != 'S' && h.typ != 'X' {
			continue // the server skips these too after the refusal
		}
		if err := s.clientMessage(ctx, h.typ, body); err != nil {
			return err
		}
		if h.typ == 'X' {
			return errClientGone
		}
	}
}

func (s *session) forward(typ byte, body []byte) error {
	if err := writeMessage(s.sw, typ, body); err != nil {
		return errClientGone
	}
	return nil
}

func (s *session) clientMessage(ctx context.Context, typ byte, body []byte) error {
	switch typ {
	case 'Q':
		var m pgproto3.Query
		if err := m.Decode(body); err != nil {
			// A NUL inside the text: the server would refuse the message and
			// go on, and so does the session.
			s.malformed("Query", err, true)
			return nil
		}
		return s.query(ctx, m.String, body)
	case 'P':
		var m pgproto3.Parse
		if err := m.Decode(body); err != nil {
			s.malformed("Parse", err, false)
			return nil
		}
		return s.parse(ctx, m.Name, m.Query, body)
	case 'B':
		var m pgproto3.Bind
		if err := m.Decode(body); err != nil {
			return fmt.Errorf("decoding Bind: %w", err)
		}
		s.portals[m.DestinationPortal] = &portal{stmt: s.prepared[m.PreparedStatement], name: m.PreparedStatement,
			params: auditParams(m.ParameterFormatCodes, m.Parameters), formats: m.ResultFormatCodes}
		return s.forward(typ, body)
	case 'E':
		var m pgproto3.Execute
		if err := m.Decode(body); err != nil {
			return fmt.Errorf("decoding Execute: %w", err)
		}
		return s.execute(ctx, m.Portal, body)
	case 'C':
		var m pgproto3.Close
		if err := m.Decode(body); err != nil {
			return fmt.Errorf("decoding Close: %w", err)
		}
		if m.ObjectType == 'S' {
			delete(s.prepared, m.Name)
		} else {
			delete(s.portals, m.Name)
		}
		return s.forward(typ, body)
	case 'S':
		s.discarding = false
		s.push(&item{kind: itemSync, parse: s.lastParse})
		s.lastParse = ""
		return s.forward(typ, body)
	case 'D':
		if s.cfg.CaptureRows > 0 {
			var m pgproto3.Describe
			if err := m.Decode(body); err != nil {
				return fmt.Errorf("decoding Describe: %w", err)
			}
			var p *prepared
			if m.ObjectType == 'S' {
				p = s.prepared[m.Name]
			} else if po := s.portals[m.Name]; po != nil {
				p = po.stmt
			}
			s.push(&item{kind: itemDescribe, stmt: p})
		}
		return s.forward(typ, body)
	case 'H', 'c', 'f', 'X':
		// Flush, CopyDone, CopyFail, Terminate.
		return s.forward(typ, body)
	case 'F':
		st := classify.Statement{Class: classify.Admin, Base: classify.Admin, Tag: "FUNCTION CALL",
			Reason: "a fast-path function call runs a function by its OID"}
		ev := &protocols.PostgresQueryEvent{SQL: "(fast-path function call)", Protocol: "simple", Class: string(st.Class), Tags: []string{st.Tag}}
		d := s.authorize(ctx, &st)
		if !d.Allow {
			s.refuse(ev, d, st, true)
			return nil
		}
		ev.Verdict, ev.Rule = protocols.VerdictAllow, d.Rule
		s.push(&item{kind: itemQuery, start: time.Now(), ev: ev})
		return s.forward(typ, body)
	}
	return fmt.Errorf("unexpected message type %q from the client", typ)
}

// query decides a simple-protocol Query: every statement in it must be
// allowed.
func (s *session) query(ctx context.Context, sql string, body []byte) error {
	stmts, perr := s.classify(sql)
	ev := &protocols.PostgresQueryEvent{SQL: sql, Protocol: "simple"}
	// Resolve EXECUTEs against what is prepared, counting PREPAREs earlier
	// in the same string; keep the changes aside until the query is allowed.
	overlay := map[string]*prepared{}
	cleared := false
	lookup := func(name string) *prepared {
		if p, ok := overlay[name]; ok {
			return p
		}
		if cleared {
			return nil
		}
		return s.prepared[name]
	}
	class := classify.Read
	var decision protocols.Decision
	decision.Allow = true
	for i, st := range stmts {
		st = s.effective(st)
		if st.Executes() {
			if p := lookup(st.Prepared.Name); p != nil {
				st = st.Resolve(p.st)
				stmts[i] = st
			}
		}
		switch {
		case st.Tag == "PREPARE" && st.Prepared != nil && st.Prepared.Statement != nil:
			np := &prepared{sql: sql, st: *st.Prepared.Statement}
			if old := lookup(st.Prepared.Name); old != nil && old.st.Class.Rank() > np.st.Class.Rank() {
				np = old // the server keeps the first of two with one name
			}
			overlay[st.Prepared.Name] = np
		case st.Deallocates != "":
			overlay[st.Deallocates] = nil
		case st.Tag == "DEALLOCATE ALL" || st.Tag == "DISCARD ALL":
			overlay, cleared = map[string]*prepared{}, true
		}
		class = class.Stronger(st.Class)
		ev.Tags = append(ev.Tags, st.Tag)
		if decision.Allow {
			d := s.authorize(ctx, &st)
			if !d.Allow {
				decision = d
				if st.Reason != "" && !d.RateLimited {
					decision.Reason += " (" + st.Reason + ")"
				}
			} else if decision.Rule == "" || st.Class != classify.Read {
				decision.Rule = d.Rule
			}
		}
	}
	if perr != nil {
		ev.Reason = perr.Error()
	}
	ev.Class = string(class)
	if len(stmts) == 0 {
		ev.Class = string(classify.Read)
	}
	if !decision.Allow {
		s.refuse(ev, decision, classify.Statement{}, true)
		return nil
	}
	if cleared {
		s.prepared = map[string]*prepared{}
	}
	for k, v := range overlay {
		if v == nil {
			delete(s.prepared, k)
		} else {
			s.prepared[k] = v
		}
	}
	ev.Verdict, ev.Rule = protocols.VerdictAllow, decision.Rule
	s.decided(ev.Verdict, ev.Class)
	s.push(&item{kind: itemQuery, start: time.Now(), ev: ev})
	return s.forward('Q', body)
}

// classify returns the statements of sql; text that does not parse is one
// admin statement.
func (s *session) classify(sql string) ([]classify.Statement, error) {
	res := s.cfg.Classifier.Classify(sql)
	if res.Err != nil {
		return []classify.Statement{{Class: classify.Admin, Base: classify.Admin,
			Reason: "Postern could not parse it: " + res.Err.Error()}}, res.Err
	}
	return res.Statements, nil
}

// parse decides an extended-protocol Parse once; the statement's Binds
// and Executes inherit its classification.
func (s *session) parse(ctx context.Context, name, sql string, body []byte) error {
	stmts, perr := s.classify(sql)
	st := classify.Statement{Class: classify.Read, Base: classify.Read}
	for _, x := range stmts {
		if x.Executes() {
			if p := s.prepared[x.Prepared.Name]; p != nil {
				x = x.Resolve(p.st)
			}
		}
		if len(stmts) == 1 || x.Class.Rank() > st.Class.Rank() {
			st = x
		}
	}
	np := &prepared{sql: sql, st: st}
	if old := s.prepared[name]; name != "" && old != nil && old.st.Class.Rank() > st.Class.Rank() {
		np = old
	}
	d := s.authorize(ctx, &st)
	if name == "" || d.Allow {
		// A refused named statement never reaches the server, so its name
		// stays free; the unnamed one is the client's latest either way
		// (the server would have dropped the old one), so it holds the
		// refusal and a later Execute of it is refused too.
		s.prepared[name] = np
	}
	if !d.Allow {
		ev := &protocols.PostgresQueryEvent{SQL: sql, Protocol: "extended", Prepared: name, Class: string(st.Class), Tags: tags(st)}
		if perr != nil {
			ev.Reason = perr.Error()
		}
		s.refuse(ev, d, st, false)
		return nil
	}
	s.lastParse = sql
	if len(stmts) == 1 {
		// SQL PREPARE and DEALLOCATE sent through the extended protocol:
		// follow them when parsed (the server acts when they execute; until
		// then a Bind of the name fails there anyway).
		switch {
		case st.Tag == "PREPARE" && st.Prepared != nil && st.Prepared.Statement != nil:
			np := &prepared{sql: sql, st: *st.Prepared.Statement}
			if old := s.prepared[st.Prepared.Name]; old != nil && old.st.Class.Rank() > np.st.Class.Rank() {
				np = old
			}
			s.prepared[st.Prepared.Name] = np
		case st.Deallocates != "":
			delete(s.prepared, st.Deallocates)
		}
	}
	return s.forward('P', body)
}

// execute decides an Execute again (the policy may have changed since the
// Parse) and opens its audit record.
func (s *session) execute(ctx context.Context, name string, body []byte) error {
	p := s.portals[name]
	var st classify.Statement
	ev := &protocols.PostgresQueryEvent{Protocol: "extended"}
	if p == nil || p.stmt == nil {
		st = classify.Statement{Class: classify.Admin, Base: classify.Admin,
			Reason: "the portal's statement is not known to Postern"}
		ev.SQL = "(portal " + strconv.Quote(name) + ")"
	} else {
		st = p.stmt.st
		ev.SQL, ev.Params, ev.Prepared = p.stmt.sql, p.params, p.name
	}
	it := &item{kind: itemExecute, ev: ev}
	if p != nil {
		it.stmt, it.format = p.stmt, p.formats
	}
	d := s.authorize(ctx, &st)
	ev.Class, ev.Tags = string(st.Class), tags(st)
	if !d.Allow {
		s.refuse(ev, d, st, false)
		return nil
	}
	ev.Verdict, ev.Rule = protocols.VerdictAllow, d.Rule
	s.decided(ev.Verdict, ev.Class)
	it.start = time.Now()
	s.push(it)
	return s.forward('E', body)
}

func (s *session) decided(verdict, class string) {
	if s.cfg.Decided != nil {
		s.cfg.Decided(verdict, class)
	}
}

func tags(st classify.Statement) []string {
	if st.Tag == "" {
		return nil
	}
	return []string{st.Tag}
}

// refuse records a refused statement and puts a poison in its place. A
// simple-protocol refusal brings its own Sync; an extended-protocol one
// discards the client's messages until the client's Sync.
func (s *session) refuse(ev *protocols.PostgresQueryEvent, d protocols.Decision, st classify.Statement, simple bool) {
	code := "42501"
	if d.RateLimited {
		code = "53400" // configuration_limit_exceeded, as SPEC §7 says
		st.Reason = ""
	}
	s.refuseCode(ev, d, st, simple, code)
}

// refuseCode is refuse with the SQLSTATE to show: 42501 for the policy,
// 08P01 for a malformed message.
func (s *session) refuseCode(ev *protocols.PostgresQueryEvent, d protocols.Decision, st classify.Statement, simple bool, code string) {
	reason := d.Reason
	if st.Reason != "" {
		reason += " (" + st.Reason + ")"
	}
	ev.Verdict, ev.Rule, ev.Reason = protocols.VerdictDeny, d.Rule, joinReason(reason, ev.Reason)
	ev.Code = code
	s.decided(protocols.VerdictDeny, ev.Class)
	ev.Error = fmt.Sprintf("Postern: rule %q refuses this statement: %s", d.Rule, reason)
	if strings.Contains(reason, strconv.Quote(d.Rule)) { // the policy named it already
		ev.Error = "Postern refuses this statement: " + reason
	}
	if code != "42501" {
		ev.Error = "Postern: " + reason
	}
	now := time.Now()
	s.cfg.Recorder.Record(protocols.Event{Session: s.cfg.Session, Time: now, Type: protocols.AuthzDenied,
		Data: &protocols.AuthzDeny{Rule: d.Rule, Reason: ev.Error}})
	s.cfg.Recorder.Record(protocols.Event{Session: s.cfg.Session, Time: now, Type: protocols.PostgresQuery, Data: ev})
	s.cfg.Logger.Info("statement refused", "session", s.cfg.Session, "identity", s.cfg.Identity.String(),
		"service", s.cfg.Service, "rule", d.Rule, "verdict", protocols.VerdictDeny, "class", ev.Class, "reason", reason)

	s.poisonSeq++
	name := s.poisonPrefix + strconv.FormatUint(s.poisonSeq, 10)
	deny := &pgproto3.ErrorResponse{Severity: "ERROR", SeverityUnlocalized: "ERROR", Code: code, Message: ev.Error}
	s.push(&item{kind: itemPoison, poison: name, deny: deny})
	b, _ := (&pgproto3.Bind{PreparedStatement: name}).Encode(nil)
	s.sw.Write(b)
	if simple {
		s.push(&item{kind: itemSync})
		b, _ = (&pgproto3.Sync{}).Encode(nil)
		s.sw.Write(b)
		return
	}
	s.discarding = true
}

// malformed refuses a message that does not decode, whatever the policy,
// with the error a server gives (08P01), and records it.
func (s *session) malformed(what string, err error, simple bool) {
	ev := &protocols.PostgresQueryEvent{SQL: "(malformed " + what + " message)", Protocol: "extended", Class: string(classify.Admin)}
	if simple {
		ev.Protocol = "simple"
	}
	d := protocols.Decision{Rule: "protocol", Reason: "malformed " + what + " message: " + err.Error()}
	s.refuseCode(ev, d, classify.Statement{}, simple, "08P01")
}

func joinReason(a, b string) string {
	switch {
	case b == "":
		return a
	case a == "":
		return b
	}
	return a + "; " + b
}

// auditParams renders Bind parameters for the recording: text as sent,
// binary as \x and hex, each cut at maxParamLen.
func auditParams(formats []int16, values [][]byte) []*string {
	if len(values) == 0 {
		return nil
	}
	out := make([]*string, len(values))
	for i, v := range values {
		if v == nil {
			continue
		}
		binary := false
		switch {
		case len(formats) == 1:
			binary = formats[0] == 1
		case i < len(formats):
			binary = formats[i] == 1
		}
		var t string
		if binary {
			t = `\x` + hex.EncodeToString(v[:min(len(v), maxParamLen/2)])
		} else {
			t = string(v[:min(len(v), maxParamLen)])
		}
		if len(t) < len(v) && !binary || binary && len(v) > maxParamLen/2 {
			t += "…"
		}
		out[i] = &t
	}
	return out
}

func (s *session) push(it *item) {
	s.mu.Lock()
	s.queue = append(s.queue, it)
	s.mu.Unlock()
}
