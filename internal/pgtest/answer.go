package pgtest

import (
	"testing"

	"github.com/jackc/pgx/v5/pgproto3"
)

// Answer reads a server's answer to one simple query, up to ReadyForQuery,
// and returns the first column of each row, or the server's error.
func Answer(t testing.TB, fe *pgproto3.Frontend) ([]string, *pgproto3.ErrorResponse) {
	t.Helper()
	var rows []string
	var failed *pgproto3.ErrorResponse
	for {
		msg, err := fe.Receive()
		if err != nil {
			t.Fatalf("reading the answer: %v", err)
		}
		switch m := msg.(type) {
		case *pgproto3.DataRow:
			rows = append(rows, string(m.Values[0]))
		case *pgproto3.ErrorResponse:
			e := *m
			failed = &e
		case *pgproto3.ReadyForQuery:
			return rows, failed
		}
	}
}
