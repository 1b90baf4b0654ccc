package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The CLI tests drive the real postern binary, built once per test process.
var cliBuild struct {
	once sync.Once
	path string
	err  error
}

// posternBinary builds ./cmd/postern from the module root the first time it
// is called and returns the binary's path. The binary lives in a temporary
// folder of its own, shared by every CLI test of this process; such folders
// are removed by a later run once they are a day old.
func posternBinary(t testing.TB) string {
	t.Helper()
	cliBuild.once.Do(func() {
		out, err := exec.Command("go", "env", "GOMOD").Output()
		if err != nil {
			cliBuild.err = fmt.Errorf("finding the module root: %w", err)
			return
		}
		gomod := strings.TrimSpace(string(out))
		if gomod == "" || gomod == os.DevNull {
			cliBuild.err = errors.New("finding the module root: not in a module")
			return
		}
		pruneOldBinaries()
		dir, err := os.MkdirTemp("", binaryDirPrefix)
		if err != nil {
			cliBuild.err = fmt.Errorf("making a folder for the binary: %w", err)
			return
		}
		bin := filepath.Join(dir, "postern")
		cmd := exec.Command("go", "build", "-o", bin, "./cmd/postern")
		cmd.Dir = filepath.Dir(gomod)
		if out, err := cmd.CombinedOutput(); err != nil {
			cliBuild.err = fmt.Errorf("building postern: %w\n%s", err, out)
			return
		}
		cliBuild.path = bin
	})
	if cliBuild.err != nil {
		t.Fatal(cliBuild.err)
	}
	return cliBuild.path
}

// binaryDirPrefix names the temporary folders that hold built binaries.
const binaryDirPrefix = "postern-cli-test-"

// pruneOldBinaries removes binary folders that earlier test processes left
// behind (there is no hook at the end of a test process without TestMain).
// A folder older than a day no longer belongs to a running test.
func pruneOldBinaries() {
	old, _ := filepath.Glob(filepath.Join(os.TempDir(), binaryDirPrefix+"*"))
	for _, dir := range old {
		if fi, err := os.Stat(dir); err == nil && fi.IsDir() && time.Since(fi.ModTime()) > 24*time.Hour {
			os.RemoveAll(dir)
		}
	}
}

// freePort returns a loopback port that is free on both TCP and UDP (the
// gateway serves both on one port number).
func freePort(t testing.TB) int {
	t.Helper()
	for range 20 {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		pc, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		pc.Close()
		return port
	}
	t.Fatal("no port free on both TCP and UDP after 20 tries")
	return 0
}

func loopback(port int) string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(port)) }

// proc is a long-running postern process (gateway, agent, connect).
type proc struct {
	name   string
	cmd    *exec.Cmd
	stdout *logBuffer
	stderr *logBuffer
	done   chan struct{} // closed when the process has exited
	code   int           // exit code, valid after done; -1 for a signal
}

// startProc starts the binary with args in dir. Failures go to t; the
// process lives until life ends (it then gets SIGTERM, and SIGKILL 10s
// later), so a process started in one step of a scenario outlives the step.
func startProc(t, life testing.TB, name, dir string, args ...string) *proc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, posternBinary(t), args...)
	cmd.Dir = dir
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 10 * time.Second
	p := &proc{name: name, cmd: cmd, stdout: &logBuffer{}, stderr: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.stdout, p.stderr
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		cmd.Wait()
		p.code = cmd.ProcessState.ExitCode()
		close(p.done)
	}()
	life.Cleanup(func() {
		cancel()
		<-p.done
		if strings.Contains(p.stderr.String(), "goroutine ") {
			life.Errorf("%s printed a Go stack trace:\n%s", name, p.stderr)
		} else if life.Failed() {
			life.Logf("%s (exit %d) stderr:\n%s", name, p.code, p.stderr)
		}
	})
	return p
}

// exited reports whether the process has ended.
func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop sends SIGTERM and returns the exit code once the process is gone.
func (p *proc) stop(t testing.TB) int {
	t.Helper()
	if !p.exited() {
		if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil && !errors.Is(err, os.ErrProcessDone) {
			t.Fatalf("stopping %s: %v", p.name, err)
		}
	}
	select {
	case <-p.done:
	case <-time.After(20 * time.Second):
		t.Fatalf("%s did not exit within 20s of SIGTERM; stderr:\n%s", p.name, p.stderr)
	}
	return p.code
}

// waitLog waits until the process's stderr holds n occurrences of s.
func (p *proc) waitLog(t testing.TB, within time.Duration, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(within)
	for strings.Count(p.stderr.String(), s) < n {
		if p.exited() {
			t.Fatalf("%s exited (code %d) before logging %q; stderr:\n%s", p.name, p.code, s, p.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not log %q within %s; stderr:\n%s", p.name, s, within, p.stderr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// cliResult is what a short command left behind.
type cliResult struct {
	stdout, stderr string
	code           int
}

// runCLI runs a short command of the binary in dir with stdin and returns
// its output and exit code. A command still running after 30s fails t.
func runCLI(t testing.TB, dir, stdin string, args ...string) cliResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, posternBinary(t), args...)
	cmd.Dir = dir
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("running postern %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		t.Fatalf("postern %s did not finish within 30s", strings.Join(args, " "))
	}
	r := cliResult{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
	if strings.Contains(r.stderr, "goroutine ") {
		t.Errorf("postern %s printed a Go stack trace:\n%s", strings.Join(args, " "), r.stderr)
	}
	return r
}

// httpGet fetches url and returns the status and body.
func httpGet(url string) (int, string, error) {
	c := &http.Client{Timeout: 3 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

// waitReady polls the gateway's /readyz until it answers 200.
func waitReady(t testing.TB, g *proc, ops string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, _, err := httpGet("http://" + ops + "/readyz")
		if err == nil && code == http.StatusOK {
			return
		}
		if g.exited() {
			t.Fatalf("gateway exited with code %d before it was ready; stderr:\n%s", g.code, g.stderr)
		}
		if time.Now().After(deadline) {
			t.Fatalf("gateway not ready within 30s (last: %d, %v); stderr:\n%s", code, err, g.stderr)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// sessionsOK reads postern_sessions_total{outcome="ok"} from /metrics.
func sessionsOK(ops string) (float64, error) {
	code, body, err := httpGet("http://" + ops + "/metrics")
	if err != nil {
		return 0, err
	}
	if code != http.StatusOK {
		return 0, fmt.Errorf("GET /metrics: status %d", code)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, `postern_sessions_total{outcome="ok"} `); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	return 0, errors.New(`no postern_sessions_total{outcome="ok"} in /metrics`)
}

// plainEcho sends a line over a plain TCP connection to addr and expects it
// back.
func plainEcho(addr, line string) error {
	c, err := net.DialTimeout("tcp", addr, 3*time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, line); err != nil {
		return err
	}
	got := make([]byte, len(line))
	if _, err := io.ReadFull(c, got); err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if string(got) != line {
		return fmt.Errorf("got %q, want %q", got, line)
	}
	return nil
}

// opensslEcho runs `openssl s_client` against the gateway with the SVID in
// idDir and SNI service.localhost, writes line and returns what came back on
// stdout: the echoed line, or less when the gateway closed the connection
// first. stderr is openssl's. -quiet implies -ign_eof, so openssl would
// wait for the server after stdin's EOF; -no_ign_eof makes closing stdin end
// the session, and the process is killed if it lingers. -cert sends only the
// leaf of svid.pem: the gateway completes the chain with its intermediate.
func opensslEcho(gateway, service, idDir, line string) (stdout, stderr string, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "openssl", "s_client", "-quiet", "-no_ign_eof",
		"-connect", gateway, "-servername", service+".localhost",
		"-cert", filepath.Join(idDir, "svid.pem"),
		"-key", filepath.Join(idDir, "svid_key.pem"),
		"-CAfile", filepath.Join(idDir, "svid_bundle.pem"), "-verify_return_error")
	cmd.WaitDelay = 5 * time.Second
	var outBuf, errBuf logBuffer
	cmd.Stdout, cmd.Stderr = &outBuf, &errBuf
	in, err := cmd.StdinPipe()
	if err != nil {
		return "", "", err
	}
	if err := cmd.Start(); err != nil {
		return "", "", fmt.Errorf("starting openssl: %w", err)
	}
	done := make(chan struct{})
	go func() {
		cmd.Wait()
		close(done)
	}()
	// A write error means openssl is already gone (handshake refused);
	// what it said is in its stderr.
	io.WriteString(in, line)
	deadline := time.After(10 * time.Second)
wait:
	for len(outBuf.String()) < len(line) {
		select {
		case <-done:
			break wait
		case <-deadline:
			break wait
		case <-time.After(20 * time.Millisecond):
		}
	}
	in.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		cmd.Process.Kill()
		<-done
	}
	return outBuf.String(), errBuf.String(), nil
}
