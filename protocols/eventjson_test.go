package protocols

import (
	"bytes"
	"encoding/json"
	"math"
	"testing"
)

type jsonAppender interface {
	AppendJSON([]byte) ([]byte, bool)
}

// sameAsMarshal fails t unless v.AppendJSON writes what json.Marshal does,
// or declines exactly when Marshal fails.
func sameAsMarshal(t *testing.T, v jsonAppender) {
	t.Helper()
	want, err := json.Marshal(v)
	got, ok := v.AppendJSON([]byte("prefix"))
	if err != nil {
		if ok || string(got) != "prefix" {
			t.Fatalf("Marshal failed (%v), AppendJSON gave %q, %v", err, got, ok)
		}
		return
	}
	if !ok || !bytes.Equal(got, append([]byte("prefix"), want...)) {
		t.Fatalf("AppendJSON:\n got %s\nwant prefix%s", got, want)
	}
}

func strp(s string) *string { return &s }

func TestAppendJSONMatchesMarshal(t *testing.T) {
	odd := "a\"b\\c\x00\x01\x1f\b\f\n\r\t<>&\x7f é ü \u2028\u2029 \xff\xfe\xc3 ☃ 😀"
	tests := map[string]jsonAppender{
		"tcp":             &TCPDataEvent{Direction: ClientToService, Bytes: 1 << 40},
		"tcp zero":        &TCPDataEvent{},
		"query zero":      &PostgresQueryEvent{},
		"query pgbench":   &PostgresQueryEvent{SQL: "SELECT abalance FROM pgbench_accounts WHERE aid = $1;", Params: []*string{strp("58191")}, Protocol: "extended", Prepared: "P_0", Class: "read", Tags: []string{"SELECT"}, Verdict: "allow", Rule: "bench-pg", Completed: []string{"SELECT 1"}, Rows: 1, Duration: 0.329},
		"query all":       &PostgresQueryEvent{SQL: odd, Params: []*string{nil, strp(odd), strp("")}, Protocol: odd, Prepared: odd, Class: odd, Tags: []string{odd, ""}, Verdict: odd, Rule: odd, Reason: odd, Completed: []string{}, Rows: -5, Code: odd, Error: odd, Duration: 1e-7, Columns: []string{odd}, Result: [][]*string{nil, {nil, strp(odd)}, {}}},
		"query big float": &PostgresQueryEvent{Duration: 1e21},
		"query neg float": &PostgresQueryEvent{Duration: -123456.789},
		"query tiny":      &PostgresQueryEvent{Duration: 5e-324},
		"query NaN":       &PostgresQueryEvent{Duration: math.NaN()},
		"query Inf":       &PostgresQueryEvent{Duration: math.Inf(-1)},
		"http":            &HTTPRequestEvent{Method: "GET", Path: "/a/<b>", Query: "x=1&y=2", Identity: odd, Auth: AuthSVID, Verdict: VerdictDeny, Rule: "r", Reason: odd, Status: 403, BytesIn: 3, BytesOut: 4, Upgrade: "websocket", Error: odd, Duration: 12.5},
		"http zero":       &HTTPRequestEvent{},
		"http Inf":        &HTTPRequestEvent{Duration: math.Inf(1)},
		"grpc":            &GRPCCallEvent{Method: "/pkg.S/M", Identity: odd, Auth: AuthOIDC, Verdict: VerdictAllow, Rule: "r", Reason: "x", Status: 7, Message: odd, BytesIn: 1, BytesOut: 2, Duration: 0.001},
		"grpc zero":       &GRPCCallEvent{},
	}
	for name, v := range tests {
		t.Run(name, func(t *testing.T) { sameAsMarshal(t, v) })
	}
}

// FuzzAppendJSON holds the encoders to encoding/json for any strings and
// numbers.
func FuzzAppendJSON(f *testing.F) {
	f.Add("SELECT 1", "x", int64(1), 0.329)
	f.Add("a\"\\\x00<>&\u2028\xff", "\t\n", int64(-1), 1e-7)
	f.Add("", "", int64(0), 1e21)
	f.Fuzz(func(t *testing.T, s, u string, n int64, d float64) {
		sameAsMarshal(t, &PostgresQueryEvent{SQL: s, Params: []*string{&u, nil}, Protocol: u, Prepared: s, Class: u,
			Tags: []string{s}, Verdict: u, Rule: s, Reason: u, Completed: []string{u}, Rows: n, Code: s, Error: u,
			Duration: d, Columns: []string{s}, Result: [][]*string{{&s, nil}}})
		sameAsMarshal(t, &HTTPRequestEvent{Method: s, Path: u, Query: s, Identity: u, Auth: s, Verdict: u, Rule: s,
			Reason: u, Status: int(n), BytesIn: n, BytesOut: -n, Upgrade: s, Error: u, Duration: d})
		sameAsMarshal(t, &GRPCCallEvent{Method: s, Identity: u, Auth: s, Verdict: u, Rule: s, Reason: u,
			Status: int(n), Message: s, BytesIn: n, BytesOut: n, Duration: d})
		sameAsMarshal(t, &TCPDataEvent{Direction: s, Bytes: n})
	})
}
