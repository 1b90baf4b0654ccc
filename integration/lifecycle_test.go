package integration

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/agent"
	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki"
	"github.com/postern/postern/pki/jointoken"
)

// TestJoinTokens: a token works once; reused, expired, for another agent or
// signed by another gateway it is refused with a clear error.
func TestJoinTokens(t *testing.T) {
	g := startGateway(t, basePolicy)
	other := startGateway(t, basePolicy) // another gateway: another key, another CA
	enroll := func(name, token string) error {
		_, err := agent.New(context.Background(), agent.Config{Gateway: g.addr(), Name: name, Token: token,
			DataDir: t.TempDir(), Transport: "tls"})
		return err
	}
	good, _, err := g.srv.Data().MintToken("a1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := enroll("a1", good); err != nil {
		t.Fatalf("first use of a token: %v", err)
	}
	short, _, err := g.srv.Data().MintToken("a2", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	forOther, _, _ := other.srv.Data().MintToken("a3", 0)
	forA4, _, _ := g.srv.Data().MintToken("a4", 0)
	time.Sleep(2 * time.Second) // let the short token expire

	tests := map[string]struct {
		name, token, want string
	}{
		"reused":                    {name: "a1", token: good, want: "already used"},
		"expired":                   {name: "a2", token: short, want: "expired"},
		"signed by another gateway": {name: "a3", token: forOther, want: "fingerprint"},
		"for another agent":         {name: "a5", token: forA4, want: `for agent "a4"`},
		"not a token":               {name: "a6", token: "not-a-jwt", want: "reading join token"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			err := enroll(tc.name, tc.token)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	t.Run("signed by another key for this CA", func(t *testing.T) {
		// A token carrying this gateway's CA fingerprint but signed by
		// another gateway's key passes the agent's pin and must be refused
		// by the gateway.
		_, claims, _ := g.srv.Data().MintToken("a7", 0)
		forged, _, err := jointoken.Mint(other.srv.Data().TokenKey, "a7", "postern.local", claims.Fingerprint, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		err = enroll("a7", forged)
		if err == nil || !strings.Contains(err.Error(), "checking join token") {
			t.Fatalf("got %v, want refusal of the token's signature", err)
		}
		waitFor(t, 5*time.Second, "log of the refusal", func() bool {
			return strings.Contains(g.logs.String(), "enroll refused")
		})
	})
	// The gateway still enrolls good agents.
	fresh, _, _ := g.srv.Data().MintToken("a8", 0)
	if err := enroll("a8", fresh); err != nil {
		t.Fatalf("enrolling after refusals: %v", err)
	}
}

// TestPolicyReload: a policy change takes effect without a restart; an
// invalid file is refused and the previous policy stays.
func TestPolicyReload(t *testing.T) {
	g := startGateway(t, basePolicy)
	startAgent(t, g, "db1", "tls", t.TempDir(), echoService(startEcho(t))).waitConnected(t)
	bob := issue(t, g, "spiffe://postern.local/user/bob")
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	if err := echoOnce(g, "echo", bob); err == nil {
		t.Fatal("bob got through before the policy allowed him")
	}
	write := func(text string) { g.writePolicy(t, text) }
	write(basePolicy + `  - name: bob-echo
    identities: [spiffe://postern.local/user/bob]
    services: [echo]
`)
	waitFor(t, 5*time.Second, "bob allowed after reload", func() bool { return echoOnce(g, "echo", bob) == nil })

	write("rules:\n  - name: broken\n    efect: allow\n")
	waitFor(t, 5*time.Second, "invalid policy logged", func() bool {
		return strings.Contains(g.logs.String(), "efect")
	})
	if err := echoOnce(g, "echo", bob); err != nil {
		t.Fatalf("after an invalid policy the previous one must stay: %v", err)
	}
	if err := echoOnce(g, "echo", alice); err != nil {
		t.Fatalf("alice after an invalid policy: %v", err)
	}
}

// TestAgentRestartReusesSVID: a restarted agent uses its stored SVID; the
// used token it is given again is ignored.
func TestAgentRestartReusesSVID(t *testing.T) {
	g := startGateway(t, basePolicy)
	dir := t.TempDir()
	token, _, _ := g.srv.Data().MintToken("db1", 0)
	cfg := agent.Config{Gateway: g.addr(), Name: "db1", Token: token, DataDir: dir, Transport: "quic",
		Services: []agent.Service{echoService(startEcho(t))}, Heartbeat: time.Second}
	a := runAgent(t, cfg)
	a.waitConnected(t)
	first, _, err := pki.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	a.stop()

	b := runAgent(t, cfg) // same (now used) token
	b.waitConnected(t)
	second, _, err := pki.ReadFiles(dir)
	if err != nil {
		t.Fatal(err)
	}
	if !first.Certificates[0].Equal(second.Certificates[0]) {
		t.Fatal("restarted agent got a new SVID, want the stored one reused")
	}
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	waitFor(t, 5*time.Second, "echo after agent restart", func() bool { return echoOnce(g, "echo", alice) == nil })
}

// TestGatewayRestart: the gateway stops and starts again on the same port
// and data dir; the agent reconnects and the service is reachable within 10s.
func TestGatewayRestart(t *testing.T) {
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			g := startGateway(t, basePolicy)
			a := startAgent(t, g, "db1", transport, t.TempDir(), echoService(startEcho(t)))
			a.waitConnected(t)
			alice := issue(t, g, "spiffe://postern.local/user/alice")
			waitFor(t, 5*time.Second, "echo", func() bool { return echoOnce(g, "echo", alice) == nil })
			bundle, _ := os.ReadFile(filepath.Join(g.cfg.DataDir, "bundle.pem"))

			g.stop(t)
			cfg := g.cfg
			cfg.Listen = g.addr()
			g2 := runGateway(t, cfg)
			bundle2, _ := os.ReadFile(filepath.Join(cfg.DataDir, "bundle.pem"))
			if string(bundle) != string(bundle2) {
				t.Fatal("restarted gateway made a new CA, want the stored one reused")
			}
			waitFor(t, 10*time.Second, "service reachable after gateway restart", func() bool {
				return echoOnce(g2, "echo", alice) == nil
			})
		})
	}
}

// TestAutoFallsBackToTLS: with UDP blocked (the gateway serves no QUIC and a
// socket swallows the datagrams), auto uses TLS + yamux.
func TestAutoFallsBackToTLS(t *testing.T) {
	g := startGateway(t, basePolicy, func(c *gateway.Config) { c.DisableQUIC = true })
	udp, err := net.ListenPacket("udp", g.addr()) // a black hole on the tunnel's UDP port
	if err != nil {
		t.Fatal(err)
	}
	defer udp.Close()
	go func() {
		buf := make([]byte, 2048)
		for {
			if _, _, err := udp.ReadFrom(buf); err != nil {
				return
			}
		}
	}()
	a := runAgent(t, agent.Config{Gateway: g.addr(), Name: "db1", Token: mint(t, g, "db1"), DataDir: t.TempDir(),
		Transport: "auto", QUICTimeout: time.Second, Services: []agent.Service{echoService(startEcho(t))}})
	if got := a.waitConnected(t); got != "tls" {
		t.Fatalf("got transport %q, want tls", got)
	}
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	waitFor(t, 5*time.Second, "echo over the fallback", func() bool { return echoOnce(g, "echo", alice) == nil })

	t.Run("auto prefers QUIC", func(t *testing.T) {
		g := startGateway(t, basePolicy)
		a := runAgent(t, agent.Config{Gateway: g.addr(), Name: "db2", Token: mint(t, g, "db2"), DataDir: t.TempDir()})
		if got := a.waitConnected(t); got != "quic" {
			t.Fatalf("got transport %q, want quic", got)
		}
	})
}

// TestSeveralAgentsOneService: two agents serve echo; when one dies the
// other carries every new session.
func TestSeveralAgentsOneService(t *testing.T) {
	g := startGateway(t, basePolicy)
	echo := startEcho(t)
	a1 := startAgent(t, g, "a1", "quic", t.TempDir(), echoService(echo))
	a2 := startAgent(t, g, "a2", "tls", t.TempDir(), echoService(echo))
	a1.waitConnected(t)
	a2.waitConnected(t)
	alice := issue(t, g, "spiffe://postern.local/user/alice")
	for range 10 {
		if err := echoOnce(g, "echo", alice); err != nil {
			t.Fatal(err)
		}
	}
	agents := map[string]bool{}
	for _, s := range recordedSessions(t, g) {
		agents[s.start.Agent] = true
	}
	if !agents["a1"] || !agents["a2"] {
		t.Fatalf("got sessions on agents %v, want both a1 and a2 used", agents)
	}
	a1.stop()
	for range 10 {
		if err := echoOnce(g, "echo", alice); err != nil {
			t.Fatalf("with one agent gone: %v", err)
		}
	}
}

func mint(t testing.TB, g *gw, name string) string {
	t.Helper()
	tok, _, err := g.srv.Data().MintToken(name, 0)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}
