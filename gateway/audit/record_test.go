package audit

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// TestAppendLineMatchesEncode: the writer's fast encoding is byte for byte
// the canonical one the readers check against.
func TestAppendLineMatchesEncode(t *testing.T) {
	data := func(v any) json.RawMessage {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	t0 := time.Date(2026, 12, 3, 12, 0, 0, 123456789, time.UTC)
	tests := map[string]Record{
		"query": {V: 2, Seq: 7, Time: t0, Session: "0193-abc_D", Type: protocols.PostgresQuery, Prev: hash([]byte("x")),
			Data: data(protocols.PostgresQueryEvent{SQL: "select '<&>' || $1, 'ü\u2028'", Params: []*string{nil}, Class: "read", Verdict: "allow"})},
		"whole second":      {V: 2, Seq: 0, Time: t0.Truncate(time.Second), Session: "s", Type: protocols.SessionStarted, Data: data(protocols.SessionStart{Source: "127.0.0.1:1"})},
		"trailing zeros":    {V: 2, Seq: 1, Time: t0.Truncate(time.Millisecond), Session: "s", Type: protocols.TCPData, Data: data(protocols.TCPDataEvent{Bytes: 1})},
		"large seq":         {V: 2, Seq: 1 << 50, Time: t0, Session: "s", Type: protocols.HTTPRequested, Data: data(protocols.HTTPRequestEvent{Path: "/a?<b>"})},
		"no data":           {V: 2, Seq: 2, Time: t0, Session: "s", Type: protocols.SessionEnded},
		"type to escape":    {V: 2, Seq: 3, Time: t0, Session: "s", Type: "x<y\"z", Data: []byte(`{}`)},
		"year out of range": {V: 2, Seq: 4, Time: time.Date(12000, 1, 1, 0, 0, 0, 0, time.UTC), Session: "s", Type: "t", Data: []byte(`1`)},
	}
	for name, r := range tests {
		t.Run(name, func(t *testing.T) {
			want, werr := encode(r)
			got, gerr := appendLine(nil, r, []byte(r.Prev))
			if (werr == nil) != (gerr == nil) || !bytes.Equal(got, want) {
				t.Fatalf("got %s (%v), want %s (%v)", got, gerr, want, werr)
			}
		})
	}
}

func BenchmarkRecordLine(b *testing.B) {
	data, _ := json.Marshal(protocols.PostgresQueryEvent{SQL: "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2", Class: "write", Verdict: "allow", Rule: "bench", Rows: 1, Duration: 0.2})
	r := Record{V: 2, Seq: 12, Time: time.Now().UTC(), Session: "0193a1b2-c3d4-7e5f-8a9b-0c1d2e3f4a5b", Type: protocols.PostgresQuery, Data: data, Prev: hash(data)}
	b.Run("encode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			encode(r)
		}
	})
	b.Run("appendLine", func(b *testing.B) {
		b.ReportAllocs()
		var buf []byte
		for b.Loop() {
			buf, _ = appendLine(buf[:0], r, []byte(r.Prev))
		}
	})
}

// TestChainHash: the writer's and the verifier's running hash is empty
// before the first record and then what hash returns for the last line.
func TestChainHash(t *testing.T) {
	var h chainHash
	if h.bytes() != nil || h.String() != "" {
		t.Fatalf("before the first record: %q", h.String())
	}
	for _, line := range []string{"", "{}", `{"v":2,"seq":0}`, strings.Repeat("x", 5000)} {
		h.after([]byte(line))
		if got, want := h.String(), hash([]byte(line)); got != want || string(h.bytes()) != want {
			t.Fatalf("after %.20q: %s, want %s", line, got, want)
		}
	}
}
