package http

import (
	"testing"
	"time"
)

func TestParseGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want time.Duration
		ok   bool
	}{
		{"1H", time.Hour, true},
		{"2M", 2 * time.Minute, true},
		{"30S", 30 * time.Second, true},
		{"250m", 250 * time.Millisecond, true},
		{"99999999u", 99999999 * time.Microsecond, true},
		{"0n", 0, true},
		{"00000007n", 7, true},
		{"99999999H", 0, false},  // longer than a time.Duration
		{"123456789m", 0, false}, // nine digits
		{"", 0, false},
		{"m", 0, false},
		{"10", 0, false},
		{"10s", 0, false},
		{"-1S", 0, false},
		{"1 S", 0, false},
		{"1.5S", 0, false},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, ok := parseGRPCTimeout(tc.in)
			if got != tc.want || ok != tc.ok {
				t.Errorf("parseGRPCTimeout(%q) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
			}
		})
	}
}

// TestParseGRPCTimeoutTruncated: every prefix of a valid value but the
// whole lacks its unit, and is refused.
func TestParseGRPCTimeoutTruncated(t *testing.T) {
	const v = "12345678m"
	for i := 0; i < len(v); i++ {
		if d, ok := parseGRPCTimeout(v[:i]); ok {
			t.Errorf("parseGRPCTimeout(%q) = %v, want it refused", v[:i], d)
		}
	}
}
