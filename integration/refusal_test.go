package integration

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/pkitest"
)

// TestRefusals tries every kind of bad client end to end. Each must fail,
// leave a log line naming the reason, be recorded, and leave the gateway
// serving a good client.
func TestRefusals(t *testing.T) {
	g := startGateway(t, basePolicy)
	a := startAgent(t, g, "db1", "tls", t.TempDir(), echoService(startEcho(t)))
	a.waitConnected(t)
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	bob := issue(t, g, "spiffe://postern.local/user/bob")
	ops := issue(t, g, "spiffe://postern.local/user/carol", "ops")
	otherCA := pkitest.NewCA(t, td)
	otherTD := pkitest.NewCA(t, spiffeid.RequireTrustDomainFromString("evil.example"))
	agentID := agentSVID(t, g) // an agent's real SVID, presented as a client
	expired := expiredSVID(t, g)

	tests := map[string]struct {
		svid    *x509svid.SVID
		service string
		raw     func(c net.Conn) // speak raw bytes instead of TLS
		reason  string           // expected in the gateway's log
	}{
		"no client certificate": {service: "echo", reason: "no client certificate"},
		"certificate from another CA": {svid: otherCA.SVID(t, spiffeid.RequireFromString("spiffe://postern.local/user/alice")),
			service: "echo", reason: "verifying client SVID"},
		"expired SVID": {svid: expired, service: "echo", reason: "verifying client SVID"},
		"SVID of another trust domain": {svid: otherTD.SVID(t, spiffeid.RequireFromString("spiffe://evil.example/user/alice")),
			service: "echo", reason: "verifying client SVID"},
		"agent SVID used as a client":        {svid: agentID, service: "echo", reason: "may not be used here"},
		"identity the policy does not allow": {svid: bob, service: "echo", reason: "default-deny"},
		"service the policy does not allow":  {svid: alice, service: "other", reason: "default-deny"},
		"unknown service in SNI":             {svid: ops, service: "nosuch", reason: `no agent serves service \"nosuch\"`},
		"garbage bytes": {raw: func(c net.Conn) { c.Write([]byte("GET / HTTP/1.0\r\n\r\n")) },
			reason: "neither TLS nor a Postgres SSLRequest"},
		"client that never speaks": {raw: func(c net.Conn) { time.Sleep(4 * time.Second) },
			reason: "handshake timeout"},
		"plaintext postgres startup": {raw: func(c net.Conn) {
			c.Write([]byte{0, 0, 0, 8 + 5, 0, 3, 0, 0, 'u', 's', 'e', 'r', 0})
		}, reason: "Postern requires TLS"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			before := strings.Count(g.logs.String(), "level=")
			if tc.raw != nil {
				c, err := net.Dial("tcp", g.addr())
				if err != nil {
					t.Fatal(err)
				}
				tc.raw(c)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				buf := make([]byte, 256)
				for {
					if _, err := c.Read(buf); err != nil {
						break // closed by the gateway (or our deadline)
					}
				}
				c.Close()
			} else if err := echoOnce(g, tc.service, tc.svid); err == nil {
				t.Fatal("got through, want refused")
			}
			waitFor(t, 5*time.Second, "log line naming "+tc.reason, func() bool {
				logs := g.logs.String()
				return strings.Count(logs, "level=") > before && strings.Contains(logs, tc.reason)
			})
			// The gateway keeps serving everyone else.
			if err := echoOnce(g, "echo", alice); err != nil {
				t.Fatalf("good client after refusal: %v", err)
			}
		})
	}

	t.Run("denials are recorded", func(t *testing.T) {
		var denied int
		for _, s := range recordedSessions(t, g) {
			if s.end.Outcome == "denied" && len(s.denies) == 1 {
				denied++
			}
		}
		if denied < len(tests)-1 { // the unknown service is allowed, then fails: outcome error
			t.Fatalf("got %d denied recordings, want at least %d", denied, len(tests)-1)
		}
	})
}

// agentSVID enrolls an agent and returns the SVID it keeps.
func agentSVID(t *testing.T, g *gw) *x509svid.SVID {
	t.Helper()
	dir := t.TempDir()
	startAgent(t, g, "spy", "tls", dir).waitConnected(t)
	s, _, err := pki.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// expiredSVID signs an expired SVID with the gateway's own intermediate,
// read from its data directory: the real CA refuses to issue one.
func expiredSVID(t *testing.T, g *gw) *x509svid.SVID {
	t.Helper()
	dir := filepath.Join(g.cfg.DataDir, "ca")
	read := func(name string) []byte {
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		return data
	}
	inter, err := pki.ParseCerts(read("intermediate.pem"))
	if err != nil {
		t.Fatal(err)
	}
	key, err := pki.ParseKey(read("intermediate_key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	ca := pkitest.FromIssuer(td, g.srv.Data().CA.Roots()[0], inter[0], key)
	return ca.SVID(t, spiffeid.RequireFromString("spiffe://postern.local/user/alice"), pkitest.Expired())
}
