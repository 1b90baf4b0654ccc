package http

import (
	"strconv"
	"testing"
	"time"
)

// FuzzParseGRPCTimeout: any value is refused or read as a non-negative
// duration that is the same number of its unit, and that formats back to
// a value no shorter.
func FuzzParseGRPCTimeout(f *testing.F) {
	for _, s := range []string{"1H", "2M", "30S", "250m", "99999999u", "0n", "99999999H", "", "m", "1x", "-1S"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		d, ok := parseGRPCTimeout(in)
		if !ok {
			return
		}
		if d < 0 || len(in) < 2 || len(in) > 9 {
			t.Fatalf("parseGRPCTimeout(%q) = %v, want it refused", in, d)
		}
		unit := map[byte]time.Duration{'H': time.Hour, 'M': time.Minute, 'S': time.Second,
			'm': time.Millisecond, 'u': time.Microsecond, 'n': time.Nanosecond}[in[len(in)-1]]
		n, err := strconv.ParseInt(in[:len(in)-1], 10, 64)
		if unit == 0 || err != nil || time.Duration(n)*unit != d {
			t.Fatalf("parseGRPCTimeout(%q) = %v, want %d × %v", in, d, n, unit)
		}
		// What the gateway forwards of it reads back, never shorter.
		if back, ok := parseGRPCTimeout(formatGRPCTimeout(d)); !ok || back < d {
			t.Fatalf("%v formats as %q, which reads back as %v, %v", d, formatGRPCTimeout(d), back, ok)
		}
	})
}
