package policy

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/protocols"
)

// logs is a slog.Handler that keeps every record as one line of text.
type logs struct {
	mu    sync.Mutex
	lines []string
}

func (l *logs) Enabled(context.Context, slog.Level) bool { return true }
func (l *logs) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logs) WithGroup(string) slog.Handler            { return l }

func (l *logs) Handle(_ context.Context, r slog.Record) error {
	var b strings.Builder
	b.WriteString(r.Level.String() + " " + r.Message)
	r.Attrs(func(a slog.Attr) bool {
		fmt.Fprintf(&b, " %s=%v", a.Key, a.Value)
		return true
	})
	l.mu.Lock()
	l.lines = append(l.lines, b.String())
	l.mu.Unlock()
	return nil
}

// count returns how many lines contain all of subs.
func (l *logs) count(subs ...string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, line := range l.lines {
		all := true
		for _, s := range subs {
			all = all && strings.Contains(line, s)
		}
		if all {
			n++
		}
	}
	return n
}

func (l *logs) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

// eventually polls cond until it holds or a generous deadline passes.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// startWatch runs Watch until the test ends, and checks that it returns.
func startWatch(t *testing.T, path string, e *Engine) *logs {
	t.Helper()
	l := &logs{}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Watch(ctx, path, e, slog.New(l)) }()
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("watch logs:\n%s", l)
		}
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Watch: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Error("Watch did not return after its context was cancelled")
		}
	})
	return l
}

func writeFile(t *testing.T, path, data string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
}

// ruleFor returns the rule that decides on alice reaching db.
func ruleFor(e *Engine) string {
	return e.Authorize(context.Background(), req("spiffe://postern.local/user/alice", "db")).Rule
}

func TestWatch(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, allowPolicy("first", "db"))
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p)
	l := startWatch(t, path, e)

	// Written in place.
	writeFile(t, path, allowPolicy("second", "db"))
	eventually(t, "the written policy", func() bool { return ruleFor(e) == "second" })
	eventually(t, "the reload log line", func() bool { return l.count("INFO policy reloaded", "rules=1") > 0 })

	// An invalid file is refused and the previous policy stays.
	writeFile(t, path, allowPolicy("third", "db")+"    effect: perhaps\n")
	eventually(t, "the refusal", func() bool { return l.count("ERROR policy refused", "line=5", `bad effect "perhaps"`) > 0 })
	if got := ruleFor(e); got != "second" {
		t.Errorf("after an invalid file: got rule %q, want second", got)
	}

	// Fixed, it loads.
	writeFile(t, path, allowPolicy("third", "db"))
	eventually(t, "the fixed policy", func() bool { return ruleFor(e) == "third" })

	// Replaced by rename, as editors save.
	tmp := filepath.Join(dir, ".policy.yaml.swp")
	writeFile(t, tmp, allowPolicy("fourth", "db"))
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the renamed policy", func() bool { return ruleFor(e) == "fourth" })

	// Removed: the policy stays.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the unreadable log line", func() bool { return l.count("ERROR policy file unreadable") > 0 })
	if got := ruleFor(e); got != "fourth" {
		t.Errorf("after removal: got rule %q, want fourth", got)
	}

	// Back, with an empty policy: everything is denied.
	writeFile(t, path, "rules: []\n")
	eventually(t, "the empty policy", func() bool { return ruleFor(e) == protocols.DefaultDeny })
}

// TestWatchSymlinkSwap updates the file the way Kubernetes updates a
// mounted ConfigMap: policy.yaml links to ..data/policy.yaml, and ..data,
// itself a link to a timestamped directory, is replaced by rename.
func TestWatchSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	version := func(name, rule string) {
		t.Helper()
		if err := os.Mkdir(filepath.Join(dir, name), 0o700); err != nil {
			t.Fatal(err)
		}
		writeFile(t, filepath.Join(dir, name, "policy.yaml"), allowPolicy(rule, "db"))
		if err := os.Symlink(name, filepath.Join(dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(dir, "..data_tmp"), filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	version("..2025_01_01", "first")
	path := filepath.Join(dir, "policy.yaml")
	if err := os.Symlink(filepath.Join("..data", "policy.yaml"), path); err != nil {
		t.Fatal(err)
	}
	p, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	e := NewEngine(p)
	startWatch(t, path, e)

	version("..2025_01_02", "second")
	if err := os.RemoveAll(filepath.Join(dir, "..2025_01_01")); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the swapped policy", func() bool { return ruleFor(e) == "second" })
}

// TestWatchStart loads a file that changed before Watch began, and nothing
// else.
func TestWatchStart(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "policy.yaml")
	writeFile(t, path, allowPolicy("on-disk", "db"))
	e := NewEngine(mustParse(t, allowPolicy("in-memory", "db")))
	startWatch(t, path, e)
	eventually(t, "the file's policy", func() bool { return ruleFor(e) == "on-disk" })

	same := NewEngine(mustParse(t, allowPolicy("on-disk", "db")))
	before := same.Policy()
	l := startWatch(t, path, same)
	// Touch another file in the directory: an event, but no change.
	writeFile(t, filepath.Join(dir, "other"), "x")
	time.Sleep(3 * debounce) // not a timing assertion: a wrong reload could only be missed
	if same.Policy() != before || l.count("policy reloaded") != 0 {
		t.Errorf("got a reload of unchanged contents: %s", l)
	}
}

func TestWatchMissingDirectory(t *testing.T) {
	path := filepath.Join(t.TempDir(), "missing", "policy.yaml")
	err := Watch(context.Background(), path, NewEngine(nil), slog.New(&logs{}))
	if err == nil || !strings.Contains(err.Error(), "watching policy directory") {
		t.Errorf("got %v, want an error watching the directory", err)
	}
}
