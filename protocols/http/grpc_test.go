package http

import (
	"math"
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

func TestFormatGRPCTimeout(t *testing.T) {
	for _, tc := range []struct {
		in   time.Duration
		want string
	}{
		{-time.Second, "0n"},
		{0, "0n"},
		{1, "1n"},
		{99999999, "99999999n"},
		{100 * time.Millisecond, "100000u"},
		{100*time.Millisecond + 1, "100001u"}, // rounded up, never shorter
		{99999999 * time.Microsecond, "99999999u"},
		{30 * time.Second, "30000000u"},
		{2 * time.Hour, "7200000m"},
		{48 * time.Hour, "172800S"},
		{50000 * time.Hour, "3000000M"},
		{2562047 * time.Hour, "2562047H"},
		{math.MaxInt64, "2562047H"}, // the last Duration: not rounded past it
	} {
		t.Run(tc.in.String(), func(t *testing.T) {
			got := formatGRPCTimeout(tc.in)
			if got != tc.want {
				t.Fatalf("formatGRPCTimeout(%v) = %q, want %q", tc.in, got, tc.want)
			}
			if d, ok := parseGRPCTimeout(got); !ok || (d < tc.in && tc.in != math.MaxInt64) {
				t.Fatalf("%q reads back as %v, %v; want at least %v", got, d, ok, tc.in)
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
