package integration

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// cliPolicy lets group ops reach echo; everyone else meets default-deny.
const cliPolicy = `rules:
  - name: ops-echo
    identities: [group:ops]
    services: [echo]
`

// cliScenario is one user's walk through SPEC §1–§5 with the real binary:
// the state that the steps of TestCLIScenario hand to each other.
type cliScenario struct {
	life      testing.TB // owns the processes; they outlive single steps
	transport string
	root      string // working folder of every command
	data      string // gateway --data-dir
	agentDir  string // agent --data-dir
	alice     string // alice's SVID folder (group ops)
	bob       string // bob's SVID folder (no group)
	tokenFile string
	policy    string
	listen    string // gateway TCP and UDP
	ops       string // gateway ops listener
	echo      string // the echo service next to the agent
	local     string // postern connect's local port

	gateway   *proc
	agent     *proc
	connect   *proc
	announced int // "agent announced services" lines the current gateway should have logged
	bundle    []byte
}

func (s *cliScenario) gatewayArgs() []string {
	return []string{"gateway", "--data-dir", s.data, "--listen", s.listen, "--ops-listen", s.ops, "--policy", s.policy}
}

func (s *cliScenario) agentArgs() []string {
	return []string{"agent", "--gateway", s.listen, "--name", "db1", "--token-file", s.tokenFile,
		"--data-dir", s.agentDir, "--service", "echo=tcp://" + s.echo, "--transport", s.transport}
}

// TestCLIScenario: gateway, admin commands, agent, openssl and postern
// connect, restarts of the gateway and of the agent, and a policy denial —
// all through the postern binary, once per tunnel transport.
func TestCLIScenario(t *testing.T) {
	posternBinary(t)
	for _, transport := range transports {
		t.Run(transport, func(t *testing.T) {
			root := t.TempDir()
			s := &cliScenario{life: t, transport: transport, root: root,
				data: filepath.Join(root, "data"), agentDir: filepath.Join(root, "agent"),
				alice: filepath.Join(root, "alice"), bob: filepath.Join(root, "bob"),
				tokenFile: filepath.Join(root, "db1.token"), policy: filepath.Join(root, "policy.yaml"),
				listen: loopback(freePort(t)), ops: loopback(freePort(t)), echo: startEcho(t),
				local: loopback(freePort(t))}
			if err := os.WriteFile(s.policy, []byte(cliPolicy), 0o644); err != nil {
				t.Fatal(err)
			}
			steps := []struct {
				name string
				run  func(t *testing.T)
			}{
				{"gateway starts", s.gatewayStarts},
				{"token create", s.tokenCreate},
				{"agent enrolls", s.agentEnrolls},
				{"identity issue", s.identityIssue},
				{"openssl client", s.opensslClient},
				{"postern connect", s.posternConnect},
				{"policy denial", s.policyDenial},
				{"metrics", s.metrics},
				{"gateway restart", s.gatewayRestart},
				{"agent restart", s.agentRestart},
			}
			for _, st := range steps {
				if !t.Run(st.name, st.run) {
					return
				}
			}
		})
	}
}

func (s *cliScenario) gatewayStarts(t *testing.T) {
	s.gateway = startProc(t, s.life, "gateway", s.root, s.gatewayArgs()...)
	waitReady(t, s.gateway, s.ops)
	for _, name := range []string{"ca", "bundle.pem", "postern.db", "recordings", "admin/svid.pem"} {
		if _, err := os.Stat(filepath.Join(s.data, name)); err != nil {
			t.Errorf("data dir: %v", err)
		}
	}
	keys, _ := filepath.Glob(filepath.Join(s.data, "ca", "*_key.pem"))
	if len(keys) == 0 {
		t.Errorf("got no ca/*_key.pem in %s", s.data)
	}
	for _, k := range append(keys, filepath.Join(s.data, "admin", "svid_key.pem")) {
		fi, err := os.Stat(k)
		if err != nil {
			t.Error(err)
			continue
		}
		if got := fi.Mode().Perm(); got != 0o600 {
			t.Errorf("%s: got mode %o, want 600", k, got)
		}
	}
	var err error
	if s.bundle, err = os.ReadFile(filepath.Join(s.data, "bundle.pem")); err != nil {
		t.Fatal(err)
	}
}

func (s *cliScenario) tokenCreate(t *testing.T) {
	r := runCLI(t, s.root, "", "token", "create", "--data-dir", s.data, "--name", "db1")
	if r.code != 0 {
		t.Fatalf("got exit %d, want 0; stderr: %s", r.code, r.stderr)
	}
	token := strings.TrimSpace(r.stdout)
	if token == "" || strings.ContainsAny(token, " \n") || strings.Count(token, ".") != 2 {
		t.Fatalf("got stdout %q, want one JWT", r.stdout)
	}
	if err := os.WriteFile(s.tokenFile, []byte(token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
}

func (s *cliScenario) agentEnrolls(t *testing.T) {
	s.agent = startProc(t, s.life, "agent", s.root, s.agentArgs()...)
	s.announced++
	s.gateway.waitLog(t, 15*time.Second, "agent announced services", s.announced)
	s.agent.waitLog(t, 15*time.Second, "tunnel up", 1) // logged after the gateway's acknowledgement
	for _, f := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem"} {
		if _, err := os.Stat(filepath.Join(s.agentDir, f)); err != nil {
			t.Errorf("agent data dir: %v", err)
		}
	}
	if got := s.agent.stderr.String(); !strings.Contains(got, "transport="+s.transport) {
		t.Errorf("agent log does not name transport %s:\n%s", s.transport, got)
	}
}

func (s *cliScenario) identityIssue(t *testing.T) {
	for who, args := range map[string][]string{
		s.alice: {"--id", "spiffe://postern.local/user/alice", "--group", "ops"},
		s.bob:   {"--id", "spiffe://postern.local/user/bob"},
	} {
		r := runCLI(t, s.root, "", append([]string{"identity", "issue", "--data-dir", s.data, "--out", who}, args...)...)
		if r.code != 0 {
			t.Fatalf("got exit %d, want 0; stderr: %s", r.code, r.stderr)
		}
		for _, f := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem"} {
			if _, err := os.Stat(filepath.Join(who, f)); err != nil {
				t.Errorf("identity: %v", err)
			}
		}
	}
}

func (s *cliScenario) opensslClient(t *testing.T) {
	const line = "hello from openssl\n"
	out, stderr, err := opensslEcho(s.listen, "echo", s.alice, line)
	if err != nil {
		t.Fatal(err)
	}
	if out != line {
		t.Fatalf("got %q back, want %q; openssl stderr:\n%s", out, line, stderr)
	}
}

func (s *cliScenario) posternConnect(t *testing.T) {
	s.connect = startProc(t, s.life, "connect", s.root, "connect", "echo", "--listen", s.local,
		"--gateway", s.listen, "--identity", s.alice)
	s.connect.waitLog(t, 10*time.Second, "forwarding", 1)
	for i := range 3 { // several connections through one local port
		if err := plainEcho(s.local, strings.Repeat("x", i*1000)+"through postern connect\n"); err != nil {
			t.Fatalf("connection %d: %v", i, err)
		}
	}
}

func (s *cliScenario) policyDenial(t *testing.T) {
	const line = "bob should not get this back\n"
	out, _, err := opensslEcho(s.listen, "echo", s.bob, line)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(out, strings.TrimSpace(line)) {
		t.Fatalf("bob got %q back, want no echo", out)
	}
	waitFor(t, 10*time.Second, "access line with verdict=deny rule=default-deny for bob", func() bool {
		for _, l := range strings.Split(s.gateway.stderr.String(), "\n") {
			if containsAll(l, "identity=spiffe://postern.local/user/bob", "verdict=deny", "rule=default-deny") {
				return true
			}
		}
		return false
	})
}

func (s *cliScenario) metrics(t *testing.T) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, err := sessionsOK(s.ops)
		if err == nil && n > 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("got postern_sessions_total{outcome=\"ok\"} %v (%v), want > 0", n, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func (s *cliScenario) gatewayRestart(t *testing.T) {
	if code := s.gateway.stop(t); code != 0 {
		t.Fatalf("gateway exited with %d after SIGTERM, want 0; stderr:\n%s", code, s.gateway.stderr)
	}
	s.gateway = startProc(t, s.life, "gateway (restarted)", s.root, s.gatewayArgs()...)
	waitReady(t, s.gateway, s.ops)
	bundle, err := os.ReadFile(filepath.Join(s.data, "bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(bundle, s.bundle) {
		t.Fatal("bundle.pem changed across a restart, want the stored CA reused")
	}
	// The agent was not told anything: it reconnects by itself.
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := plainEcho(s.local, "after gateway restart\n")
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("echo not back within 10s of the restart: %v; agent stderr:\n%s", err, s.agent.stderr)
		}
		time.Sleep(200 * time.Millisecond)
	}
	s.announced = 1
	s.gateway.waitLog(t, 5*time.Second, "agent announced services", s.announced)
}

func (s *cliScenario) agentRestart(t *testing.T) {
	if code := s.agent.stop(t); code != 0 {
		t.Errorf("agent exited with %d after SIGTERM, want 0", code)
	}
	s.agent = startProc(t, s.life, "agent (restarted)", s.root, s.agentArgs()...)
	s.agent.waitLog(t, 10*time.Second, "using stored SVID", 1)
	s.announced++
	s.gateway.waitLog(t, 15*time.Second, "agent announced services", s.announced)
	waitFor(t, 10*time.Second, "echo after the agent restart", func() bool {
		return plainEcho(s.local, "after agent restart\n") == nil
	})
	if got := s.agent.stderr.String(); strings.Contains(got, "level=ERROR") || strings.Contains(got, "already used") {
		t.Errorf("restarted agent logged an error, want the used token ignored:\n%s", got)
	}
	const line = "openssl after agent restart\n"
	if out, stderr, _ := opensslEcho(s.listen, "echo", s.alice, line); out != line {
		t.Fatalf("got %q back, want %q; openssl stderr:\n%s", out, line, stderr)
	}
}

// TestCLIExitCodes: SPEC §1's exit codes and one-line errors.
func TestCLIExitCodes(t *testing.T) {
	posternBinary(t)
	dir := t.TempDir()
	tests := map[string]struct {
		args       []string
		code       int
		stdout     string // a substring stdout must hold
		oneLineErr bool   // stderr is exactly one line "postern: …"
	}{
		"no arguments":          {args: nil, code: 2},
		"unknown command":       {args: []string{"nosuch"}, code: 2},
		"unknown flag":          {args: []string{"gateway", "--bogus"}, code: 2},
		"token without name":    {args: []string{"token", "create"}, code: 2},
		"identity for an agent": {args: []string{"identity", "issue", "--id", "spiffe://postern.local/agent/x", "--out", filepath.Join(dir, "x"), "--data-dir", dir}, code: 2},
		"missing data dir":      {args: []string{"token", "create", "--name", "x", "--data-dir", "/nonexistent"}, code: 1, oneLineErr: true},
		"version":               {args: []string{"version"}, code: 0, stdout: "postern "},
		"gateway help":          {args: []string{"gateway", "--help"}, code: 0},
		"policy help":           {args: []string{"policy", "--help"}, code: 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := runCLI(t, dir, "", tc.args...)
			if r.code != tc.code {
				t.Fatalf("got exit %d, want %d; stderr:\n%s", r.code, tc.code, r.stderr)
			}
			if !strings.Contains(r.stdout, tc.stdout) {
				t.Errorf("got stdout %q, want it to hold %q", r.stdout, tc.stdout)
			}
			lines := strings.Split(strings.TrimRight(r.stderr, "\n"), "\n")
			if tc.oneLineErr && (len(lines) != 1 || !strings.HasPrefix(lines[0], "postern: ")) {
				t.Errorf("got stderr %q, want one line starting %q", r.stderr, "postern: ")
			}
			if tc.code != 0 && !strings.HasPrefix(lines[len(lines)-1], "postern: ") {
				t.Errorf("got stderr %q, want it to end with a line starting %q", r.stderr, "postern: ")
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "postern-data")); err == nil {
		t.Error("a failed command created ./postern-data")
	}
}

// TestCLIPolicyCheck: `postern policy check` accepts a valid file and points
// at the line of a mistake.
func TestCLIPolicyCheck(t *testing.T) {
	posternBinary(t)
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	t.Run("valid", func(t *testing.T) {
		r := runCLI(t, dir, "", "policy", "check", write("good.yaml", cliPolicy))
		if r.code != 0 || !strings.Contains(r.stdout, "ok") {
			t.Fatalf("got exit %d, stdout %q, stderr %q; want 0 and ok", r.code, r.stdout, r.stderr)
		}
	})
	t.Run("typo at line 4", func(t *testing.T) {
		bad := strings.Replace(cliPolicy, "services:", "servces:", 1)
		if got := strings.Split(bad, "\n")[3]; !strings.Contains(got, "servces") {
			t.Fatalf("the typo is not on line 4: %q", got)
		}
		r := runCLI(t, dir, "", "policy", "check", write("bad.yaml", bad))
		if r.code != 1 || !strings.Contains(r.stderr, "line 4") {
			t.Fatalf("got exit %d, stderr %q; want 1 and a mention of line 4", r.code, r.stderr)
		}
	})
	t.Run("missing file", func(t *testing.T) {
		r := runCLI(t, dir, "", "policy", "check", filepath.Join(dir, "nosuch.yaml"))
		if r.code != 1 || !strings.HasPrefix(r.stderr, "postern: ") || strings.Count(r.stderr, "\n") != 1 {
			t.Fatalf("got exit %d, stderr %q; want 1 and one line starting postern: ", r.code, r.stderr)
		}
	})
}
