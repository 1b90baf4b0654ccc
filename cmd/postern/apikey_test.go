package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/postern/postern/gateway"
	"github.com/postern/postern/gateway/bearer"
)

// newDataDir makes a gateway data directory, as a first gateway start does.
func newDataDir(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "data")
	d, err := gateway.OpenDataDir(context.Background(), dir, spiffeid.RequireTrustDomainFromString("postern.local"))
	if err != nil {
		t.Fatal(err)
	}
	d.Close()
	return dir
}

// runCmd runs postern with args and returns stdout, stderr and the exit code.
func runCmd(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), args, &stdout, &stderr)
	code := exitCode(err, &stderr)
	return stdout.String(), stderr.String(), code
}

// authenticate checks key against the data dir's store, as the gateway does.
func authenticate(t *testing.T, dir, key string) (bearer.Identity, error) {
	t.Helper()
	d, err := gateway.OpenExistingDataDir(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	a, err := bearer.New(context.Background(), bearer.Config{TrustDomain: d.CA.TrustDomain(), APIKeys: d.Store})
	if err != nil {
		t.Fatal(err)
	}
	return a.Authenticate(context.Background(), key)
}

func TestAPIKeyLifecycle(t *testing.T) {
	dir := newDataDir(t)
	stdout, stderr, code := runCmd(t, "apikey", "create", "--id", "spiffe://postern.local/workload/ci",
		"--group", "deployers", "--group", "ci", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("create: got exit %d (stderr %q), want 0", code, stderr)
	}
	key := strings.TrimSpace(stdout)
	keyID, _, err := bearer.ParseAPIKey(key)
	if err != nil {
		t.Fatalf("create printed %d characters that are not a key: %v", len(key), err)
	}
	for _, want := range []string{keyID, "spiffe://postern.local/workload/ci", "never expires", "only this once"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("create: stderr %q does not say %q", stderr, want)
		}
	}
	if strings.Contains(stderr, key) {
		t.Error("create: the key is on stderr too")
	}

	id, err := authenticate(t, dir, key)
	if err != nil || id.ID.String() != "spiffe://postern.local/workload/ci" || strings.Join(id.Groups, ",") != "deployers,ci" {
		t.Fatalf("new key: got %+v, %v; want workload/ci in deployers and ci", id, err)
	}

	stdout, _, code = runCmd(t, "apikey", "list", "--data-dir", dir)
	if code != 0 || !strings.Contains(stdout, keyID) || !strings.Contains(stdout, "active") || !strings.Contains(stdout, "deployers,ci") {
		t.Fatalf("list: got exit %d and\n%s\nwant the key, active", code, stdout)
	}

	stdout, stderr, code = runCmd(t, "apikey", "revoke", keyID, "--data-dir", dir)
	if code != 0 || !strings.Contains(stdout, keyID) {
		t.Fatalf("revoke: got exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if _, err := authenticate(t, dir, key); !errors.Is(err, bearer.ErrUnauthenticated) || !strings.Contains(err.Error(), "revoked") {
		t.Fatalf("revoked key: got %v, want a refusal saying revoked", err)
	}
	if _, _, code := runCmd(t, "apikey", "revoke", "--data-dir", dir, keyID); code != 0 {
		t.Fatalf("second revoke, flags first: got exit %d, want 0", code)
	}

	if _, stderr, code := runCmd(t, "apikey", "create", "--id", "spiffe://postern.local/user/ann", "--ttl", "1h", "--data-dir", dir); code != 0 {
		t.Fatalf("create with ttl: got exit %d (%s)", code, stderr)
	}
	stdout, _, code = runCmd(t, "apikey", "list", "--format", "json", "--data-dir", dir)
	if code != 0 {
		t.Fatalf("list json: got exit %d", code)
	}
	var keys []map[string]any
	if err := json.Unmarshal([]byte(stdout), &keys); err != nil {
		t.Fatalf("list json: %v in %q", err, stdout)
	}
	if len(keys) != 2 {
		t.Fatalf("list json: got %d keys, want 2", len(keys))
	}
	if keys[0]["key_id"] != keyID || keys[0]["status"] != "revoked" || keys[0]["revoked_at"] == nil {
		t.Errorf("list json: got first key %v, want %s revoked", keys[0], keyID)
	}
	if keys[1]["spiffe_id"] != "spiffe://postern.local/user/ann" || keys[1]["status"] != "active" {
		t.Errorf("list json: got second key %v, want user/ann active", keys[1])
	}
	exp, err := time.Parse(time.RFC3339, keys[1]["expires_at"].(string))
	if err != nil || exp.Before(time.Now().Add(59*time.Minute)) {
		t.Errorf("list json: got expires_at %v, want in about an hour", keys[1]["expires_at"])
	}
	for _, k := range keys {
		for field := range k {
			if strings.Contains(field, "hash") || strings.Contains(field, "secret") {
				t.Errorf("list json shows %s", field)
			}
		}
	}
}

func TestAPIKeyExitCodes(t *testing.T) {
	dir := newDataDir(t)
	tests := map[string]struct {
		args []string
		want int
		says string // part of stderr
	}{
		"no subcommand":       {args: []string{"apikey"}, want: 2, says: "usage"},
		"unknown subcommand":  {args: []string{"apikey", "rotate"}, want: 2, says: `unknown apikey command "rotate"`},
		"help":                {args: []string{"apikey", "--help"}, want: 0},
		"create help":         {args: []string{"apikey", "create", "--help"}, want: 0},
		"no id":               {args: []string{"apikey", "create", "--data-dir", dir}, want: 2, says: "--id is required"},
		"not a SPIFFE ID":     {args: []string{"apikey", "create", "--id", "ci", "--data-dir", dir}, want: 2, says: `--id "ci"`},
		"agent id":            {args: []string{"apikey", "create", "--id", "spiffe://postern.local/agent/db1", "--data-dir", dir}, want: 2, says: "user/NAME or spiffe://TD/workload/NAME"},
		"other trust domain":  {args: []string{"apikey", "create", "--id", "spiffe://other.test/user/ann", "--data-dir", dir}, want: 2, says: `trust domain is "postern.local"`},
		"negative ttl":        {args: []string{"apikey", "create", "--id", "spiffe://postern.local/user/ann", "--ttl", "-1h", "--data-dir", dir}, want: 2, says: "--ttl"},
		"empty group":         {args: []string{"apikey", "create", "--id", "spiffe://postern.local/user/ann", "--group", "", "--data-dir", dir}, want: 2, says: "empty group"},
		"no data dir":         {args: []string{"apikey", "create", "--id", "spiffe://postern.local/user/ann", "--data-dir", filepath.Join(dir, "nope")}, want: 1, says: "no gateway has been started"},
		"revoke no id":        {args: []string{"apikey", "revoke", "--data-dir", dir}, want: 2, says: "usage"},
		"revoke two ids":      {args: []string{"apikey", "revoke", "a", "b", "--data-dir", dir}, want: 2, says: "usage"},
		"revoke a whole key":  {args: []string{"apikey", "revoke", "pk_aaaaaaaaaaaa_secret", "--data-dir", dir}, want: 2, says: "not the key"},
		"revoke unknown":      {args: []string{"apikey", "revoke", "aaaaaaaaaaaa", "--data-dir", dir}, want: 1, says: "revoking API key aaaaaaaaaaaa: no such key"},
		"list bad format":     {args: []string{"apikey", "list", "--format", "xml", "--data-dir", dir}, want: 2, says: `--format "xml"`},
		"list extra argument": {args: []string{"apikey", "list", "x", "--data-dir", dir}, want: 2, says: "no arguments"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stdout, stderr, code := runCmd(t, tc.args...)
			if code != tc.want {
				t.Fatalf("got exit %d, want %d (stderr %q)", code, tc.want, stderr)
			}
			if tc.want != 0 {
				if !strings.HasPrefix(stderr, "postern: ") || strings.Count(strings.TrimSpace(stderr), "\n") > 0 || !strings.Contains(stderr, tc.says) {
					t.Fatalf("got stderr %q, want a 'postern: ' error saying %q", stderr, tc.says)
				}
				if stdout != "" {
					t.Fatalf("got stdout %q on failure, want none", stdout)
				}
			}
		})
	}
}
