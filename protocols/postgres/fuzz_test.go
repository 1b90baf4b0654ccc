package postgres

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/postgres/classify"
)

func encode(t testing.TB, msgs ...pgproto3.Message) []byte {
	var b []byte
	for _, m := range msgs {
		var err error
		if b, err = m.Encode(b); err != nil {
			t.Fatal(err)
		}
	}
	return b
}

func startupSeeds(t testing.TB) [][]byte {
	return [][]byte{
		encode(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion30,
			Parameters: map[string]string{"user": "ann", "database": "app", "options": "-c search_path=x"}}),
		encode(t, &pgproto3.StartupMessage{ProtocolVersion: pgproto3.ProtocolVersion32, Parameters: map[string]string{"user": "u"}}),
		encode(t, &pgproto3.CancelRequest{ProcessID: 42, SecretKey: []byte{1, 2, 3, 4}}),
		encode(t, &pgproto3.SSLRequest{}),
	}
}

func FuzzReadStartup(f *testing.F) {
	for _, s := range startupSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		st, err := ReadStartup(bytes.NewReader(b))
		if err == nil && st.Cancel == nil && st.Params["user"] == "" {
			t.Fatalf("startup without a user accepted: %x", b)
		}
	})
}

// TestReadStartupTruncated: every strict prefix of a valid startup or
// cancel message is an error.
func TestReadStartupTruncated(t *testing.T) {
	for _, s := range startupSeeds(t)[:3] {
		if _, err := ReadStartup(bytes.NewReader(s)); err != nil {
			t.Fatalf("whole message %x: %v", s, err)
		}
		for i := range len(s) {
			if _, err := ReadStartup(bytes.NewReader(s[:i])); err == nil {
				t.Fatalf("prefix of %d bytes of %x accepted", i, s)
			}
		}
	}
}

// fuzzSession is a session whose server side is a buffer.
func fuzzSession(in []byte, allow bool) (*session, *bytes.Buffer) {
	var toServer bytes.Buffer
	auth := protocols.AuthorizerFunc(func(_ context.Context, r protocols.Request) protocols.Decision {
		return protocols.Decision{Allow: allow || r.Postgres.Class == "read", Rule: "r"}
	})
	s := &session{cfg: Config{Authorizer: auth, Recorder: protocols.RecorderFunc(func(protocols.Event) {}),
		Classifier: classify.New(16), MaxMessage: 1 << 16, CaptureRows: 2, Logger: discardLogger()},
		cr: bufio.NewReader(bytes.NewReader(in)), sw: bufio.NewWriter(&toServer),
		prepared: map[string]*prepared{}, portals: map[string]*portal{}, poisonPrefix: "p_"}
	return s, &toServer
}

func clientSeeds(t testing.TB) [][]byte {
	return [][]byte{
		encode(t, &pgproto3.Query{String: "select 1; delete from t"}),
		encode(t, &pgproto3.Parse{Name: "s", Query: "select $1"}, &pgproto3.Describe{ObjectType: 'S', Name: "s"},
			&pgproto3.Bind{PreparedStatement: "s", Parameters: [][]byte{[]byte("1")}}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		encode(t, &pgproto3.Parse{Query: "delete from t"}, &pgproto3.Bind{}, &pgproto3.Execute{}, &pgproto3.Sync{}),
		encode(t, &pgproto3.Query{String: "copy t from stdin"}, &pgproto3.CopyData{Data: []byte("1\n")}, &pgproto3.CopyDone{}),
		encode(t, &pgproto3.Close{ObjectType: 'S', Name: "s"}, &pgproto3.FunctionCall{Function: 1}, &pgproto3.Flush{}, &pgproto3.Terminate{}),
	}
}

// FuzzClientMessages feeds arbitrary client streams through the decision
// loop: it must never panic, and for an identity that may only read, no
// message that classifies as a write reaches the server.
func FuzzClientMessages(f *testing.F) {
	for _, s := range clientSeeds(f) {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		s, out := fuzzSession(in, false)
		s.fromClient(context.Background())
		s.sw.Flush()
		r := bufio.NewReader(out)
		for {
			h, err := readHeader(r, 1<<20)
			if err != nil {
				break
			}
			body, err := readBody(r, h, nil)
			if err != nil {
				if h.typ == 'd' { // CopyData streams; see TestClientMessagesTruncated
					break
				}
				t.Fatalf("a partial message reached the server: %v", err)
			}
			var sql string
			switch h.typ {
			case 'Q':
				var m pgproto3.Query
				m.Decode(body)
				sql = m.String
			case 'P':
				var m pgproto3.Parse
				m.Decode(body)
				sql = m.Query
			case 'F':
				t.Fatal("a function call reached the server")
			}
			if sql != "" {
				if res := classify.Classify(sql); res.Class() != classify.Read {
					t.Fatalf("%q (class %s) reached the server", sql, res.Class())
				}
			}
		}
	})
}

// TestClientMessagesTruncated: a stream cut anywhere never forwards a
// partial message and never panics.
func TestClientMessagesTruncated(t *testing.T) {
	for _, seed := range clientSeeds(t) {
		for i := range len(seed) {
			s, out := fuzzSession(seed[:i], true)
			err := s.fromClient(context.Background())
			if err != nil && !errors.Is(err, errClientGone) && !errors.Is(err, ErrMessageTooLarge) && bytes.Count(seed[:i], []byte{0}) == 0 {
				t.Fatalf("prefix %d: %v", i, err)
			}
			s.sw.Flush()
			r := bufio.NewReader(out)
			for {
				h, err := readHeader(r, 1<<20)
				if err != nil {
					if !errors.Is(err, io.EOF) {
						t.Fatalf("prefix %d: server got a broken header: %v", i, err)
					}
					break
				}
				if _, err := readBody(r, h, nil); err != nil && h.typ != 'd' {
					// CopyData streams, so a client that dies inside one
					// leaves the server a cut message, as it would directly.
					t.Fatalf("prefix %d: server got a partial message: %v", i, err)
				}
			}
		}
	}
}

// FuzzServerMessages feeds arbitrary server messages to the follower with
// a queue of every kind of item: it must never panic.
func FuzzServerMessages(f *testing.F) {
	for _, m := range []pgproto3.BackendMessage{
		&pgproto3.ErrorResponse{Severity: "ERROR", Code: "26000", Message: `prepared statement "p_1" does not exist`},
		&pgproto3.CommandComplete{CommandTag: []byte("SELECT 3")}, &pgproto3.ReadyForQuery{TxStatus: 'I'},
		&pgproto3.RowDescription{Fields: []pgproto3.FieldDescription{{Name: []byte("a"), Format: 1}}},
		&pgproto3.DataRow{Values: [][]byte{[]byte("x"), nil}}, &pgproto3.ParameterStatus{Name: "client_encoding", Value: "SJIS"},
	} {
		b, _ := m.Encode(nil)
		f.Add(b[0], b[5:])
	}
	f.Fuzz(func(t *testing.T, typ byte, body []byte) {
		s, _ := fuzzSession(nil, true)
		st := &prepared{sql: "select 1"}
		for _, k := range []itemKind{itemDescribe, itemExecute, itemQuery, itemPoison, itemSync} {
			it := &item{kind: k, stmt: st, format: []int16{1}, poison: "p_1",
				deny: &pgproto3.ErrorResponse{Code: "42501"}, ev: &protocols.PostgresQueryEvent{}}
			if k == itemPoison || k == itemSync || k == itemDescribe {
				it.ev = nil
			}
			s.queue = append(s.queue, it)
		}
		for range 6 {
			s.serverMessage(typ, body)
		}
	})
}
