package integration

import (
	"bufio"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/pki"
)

// TestRotationKeepsSessions: with one-minute SVIDs on the gateway and the
// agent, a TCP session that lasts three minutes survives at least two
// renewals on both ends, the tunnel is never re-dialed, and new sessions
// work with the renewed certificates. It takes three minutes and runs in
// parallel with the rest of the suite.
func TestRotationKeepsSessions(t *testing.T) {
	t.Parallel()
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			t.Parallel()
			g := startGateway(t, basePolicy, func(c *gateway.Config) {
				c.SVIDTTL = time.Minute
				c.AgentTTL = time.Minute
			})
			dir := t.TempDir()
			a := startAgent(t, g, "db1", transport, dir, echoService(startEcho(t)))
			a.waitConnected(t)
			alice := issue(t, g, "spiffe://postern.local/user/alice")
			// The tunnel is up before the gateway has taken the agent's
			// announcement: wait until the service is reachable.
			waitFor(t, 10*time.Second, "echo reachable", func() bool { return echoOnce(g, "echo", alice) == nil })
			c, err := dialService(g, "echo", alice)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r := bufio.NewReader(c)

			serials := map[string]bool{}
			deadline := time.Now().Add(3 * time.Minute)
			for i := 0; time.Now().Before(deadline); i++ {
				c.SetDeadline(time.Now().Add(20 * time.Second))
				line := fmt.Sprintf("ping %d\n", i)
				if _, err := c.Write([]byte(line)); err != nil {
					t.Fatalf("writing after %d pings: %v", i, err)
				}
				got, err := r.ReadString('\n')
				if err != nil || got != line {
					t.Fatalf("ping %d: got %q, %v; want %q", i, got, err, line)
				}
				if svid, _, err := pki.ReadFiles(dir); err == nil {
					serials[svid.Certificates[0].SerialNumber.String()] = true
				}
				time.Sleep(2 * time.Second)
			}
			if len(serials) < 3 {
				t.Fatalf("agent SVID serials seen: %d, want at least 3 (two renewals)", len(serials))
			}
			logs := g.logs.String()
			if n := strings.Count(logs, "gateway SVID renewed"); n < 2 {
				t.Fatalf("gateway renewed its SVID %d times, want at least 2", n)
			}
			if n := strings.Count(logs, `msg="SVID renewed" id=spiffe://postern.local/agent/db1`); n < 2 {
				t.Fatalf("agent renewals seen by the gateway: %d, want at least 2", n)
			}
			select {
			case tr := <-a.a.Connected():
				t.Fatalf("the agent re-dialed its tunnel (%s) during rotation, want the tunnel kept", tr)
			default:
			}
			if err := echoOnce(g, "echo", alice); err != nil {
				t.Fatalf("new session after renewals: %v", err)
			}
		})
	}
}
