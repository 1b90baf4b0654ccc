package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"
)

// lockedBuffer is a bytes.Buffer safe for a command writing while the test
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestAuditUICommand: `postern audit ui` serves the page and its API on a
// loopback port, stops cleanly when its context ends, and refuses a
// non-loopback address without --allow-remote.
func TestAuditUICommand(t *testing.T) {
	f := newAuditFixture(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	stdout, stderr := &lockedBuffer{}, &lockedBuffer{}
	done := make(chan error, 1)
	go func() {
		done <- run(ctx, []string{"audit", "ui", "--data-dir", f.data, "--listen", "127.0.0.1:0"}, stdout, stderr)
	}()
	serving := regexp.MustCompile(`audit ui: serving (http://127\.0\.0\.1:\d+/)`)
	var url string
	for deadline := time.Now().Add(10 * time.Second); url == ""; {
		if m := serving.FindStringSubmatch(stdout.String()); m != nil {
			url = m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("no serving line; stdout %q, stderr %q", stdout, stderr)
		}
		time.Sleep(10 * time.Millisecond)
	}
	resp, err := http.Get(url + "api/sessions?service=pg-*")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	var page struct {
		Sessions []struct {
			ID string `json:"id"`
		} `json:"sessions"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &page) != nil || len(page.Sessions) == 0 {
		t.Fatalf("GET /api/sessions: %d %s", resp.StatusCode, body)
	}
	if resp, err := http.Get(url); err != nil || resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Content-Security-Policy"), "default-src 'self'") {
		t.Fatalf("GET /: %v %+v", err, resp)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("after cancel: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("audit ui did not stop within 10s of its context ending")
	}

	err = run(context.Background(), []string{"audit", "ui", "--data-dir", f.data, "--listen", "0.0.0.0:1"}, io.Discard, io.Discard)
	var ue usageError
	if !errors.As(err, &ue) {
		t.Fatalf("non-loopback --listen: got %v, want a usage error (exit 2)", err)
	}
}
