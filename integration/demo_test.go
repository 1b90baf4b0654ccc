package integration

import (
	"net"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestDemo runs `postern demo` as a new user would and pastes the openssl
// line it prints: the echo service answers through the gateway. Then the
// demo stops cleanly on SIGTERM.
func TestDemo(t *testing.T) {
	dir := t.TempDir()
	p := startProc(t, t, "demo", dir, "demo", "--listen", "127.0.0.1:0", "--ops-listen", "127.0.0.1:0", "--data-dir", dir)
	var out string
	waitFor(t, 60*time.Second, "demo prints its commands", func() bool {
		out = p.stdout.String()
		return strings.Contains(out, "Every session is recorded") || p.exited()
	})
	if p.exited() {
		t.Fatalf("demo exited (code %d): %s", p.code, p.stderr)
	}
	m := regexp.MustCompile(`openssl s_client -quiet -connect (\S+) -servername echo\.localhost -cert (\S+)/svid\.pem`).FindStringSubmatch(out)
	if m == nil {
		t.Fatalf("demo output has no openssl line:\n%s", out)
	}
	got, stderr, err := opensslEcho(m[1], "echo", m[2], "hello demo\n")
	if err != nil || got != "hello demo\n" {
		t.Fatalf("pasting the demo's openssl line: got %q, %v\n%s", got, err, stderr)
	}
	// The session just made is announced with the command that replays it;
	// pasting that command plays it back.
	var replay []string
	waitFor(t, 15*time.Second, "the echo session announced", func() bool {
		m := regexp.MustCompile(`recorded: \S+ → echo \(tcp, ok\): \S+ (replay .*)`).FindStringSubmatch(p.stdout.String())
		if m != nil {
			replay = strings.Fields(m[1])
		}
		return m != nil
	})
	if r := runCLI(t, dir, "", replay...); r.code != 0 || !strings.Contains(r.stdout, "echo") {
		t.Errorf("pasting %q: exit %d, stdout %q, stderr %q", replay, r.code, r.stdout, r.stderr)
	}
	for _, want := range []string{"postern connect echo", "token create", "identity issue", "audit ui --data-dir", "audit verify"} {
		if !strings.Contains(out, want) {
			t.Errorf("demo output lacks %q", want)
		}
	}
	if c, err := net.DialTimeout("tcp", pgAddr, time.Second); err == nil {
		c.Close()
		if !strings.Contains(out, "psql \"host=pg.localhost") {
			t.Errorf("PostgreSQL answers on %s but the demo prints no psql line:\n%s", pgAddr, out)
		}
	}
	if code := p.stop(t); code != 0 {
		t.Fatalf("demo exited %d on SIGTERM, want 0; stderr:\n%s", code, p.stderr)
	}
}
