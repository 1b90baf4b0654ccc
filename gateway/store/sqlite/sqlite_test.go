package sqlite

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/postern/postern/gateway/store"
)

func openTest(t *testing.T, path string) *DB {
	t.Helper()
	d, err := Open(context.Background(), path)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { d.Close() })
	return d
}

func testPath(t *testing.T) string {
	return filepath.Join(t.TempDir(), "postern.db")
}

func TestUseTokenTwice(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	exp := time.Now().Add(15 * time.Minute)
	if err := d.UseToken(ctx, "tok-1", "db1", exp); err != nil {
		t.Fatalf("first UseToken: %v", err)
	}
	if err := d.UseToken(ctx, "tok-1", "db1", exp); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("second UseToken: got %v, want %v", err, store.ErrTokenUsed)
	}
	if err := d.UseToken(ctx, "tok-2", "db1", exp); err != nil {
		t.Fatalf("other token: %v", err)
	}
	if err := d.UseToken(ctx, "", "db1", exp); err == nil {
		t.Fatal("empty id: got nil error, want one")
	}
}

func TestUseTokenConcurrent(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	const n = 20
	var (
		wg   sync.WaitGroup
		errs = make([]error, n)
	)
	for i := range n {
		wg.Go(func() {
			errs[i] = d.UseToken(ctx, "same", "db1", time.Now().Add(time.Minute))
		})
	}
	wg.Wait()
	ok, used := 0, 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case errors.Is(err, store.ErrTokenUsed):
			used++
		default:
			t.Errorf("UseToken: unexpected error %v", err)
		}
	}
	if ok != 1 || used != n-1 {
		t.Fatalf("got %d successes and %d ErrTokenUsed, want 1 and %d", ok, used, n-1)
	}
}

// TestTwoHandles stands for the gateway and an admin command opening the
// same file at once.
func TestTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	gw := openTest(t, path)
	admin := openTest(t, path)
	exp := time.Now().Add(time.Hour)

	if err := admin.UseToken(ctx, "tok", "db1", exp); err != nil {
		t.Fatalf("admin UseToken: %v", err)
	}
	if err := gw.UseToken(ctx, "tok", "db1", exp); !errors.Is(err, store.ErrTokenUsed) {
		t.Fatalf("gateway UseToken of admin's token: got %v, want %v", err, store.ErrTokenUsed)
	}

	// Both write at the same time; busy_timeout lets them take turns.
	var wg sync.WaitGroup
	errs := make(chan error, 40)
	for i := range 20 {
		for h, d := range map[string]*DB{"gw": gw, "admin": admin} {
			wg.Go(func() {
				if err := d.UseToken(ctx, fmt.Sprintf("%s-%d", h, i), h, exp); err != nil {
					errs <- fmt.Errorf("%s UseToken: %w", h, err)
				}
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if err := gw.UpsertAgent(ctx, store.Agent{Name: "db1", ID: "spiffe://postern.local/agent/db1"}); err != nil {
		t.Fatalf("gateway UpsertAgent: %v", err)
	}
	as, err := admin.Agents(ctx)
	if err != nil {
		t.Fatalf("admin Agents: %v", err)
	}
	if len(as) != 1 || as[0].Name != "db1" {
		t.Fatalf("admin sees agents %+v, want db1", as)
	}
}

func TestAgentsRoundTrip(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	t0 := time.Date(2026, 1, 2, 3, 4, 5, 6000, time.UTC)

	if as, err := d.Agents(ctx); err != nil || len(as) != 0 {
		t.Fatalf("empty store: got %v, %v, want no agents", as, err)
	}
	steps := []struct {
		name string
		in   store.Agent
		want store.Agent
	}{
		{
			name: "insert",
			in: store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", Transport: "quic",
				Services: []string{"pg=postgres", "web=http"}, Source: "127.0.0.1:5000", LastSeen: t0},
			want: store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", Transport: "quic",
				Services: []string{"pg=postgres", "web=http"}, Source: "127.0.0.1:5000", LastSeen: t0, FirstSeen: t0},
		},
		{
			name: "update keeps first seen, replaces services",
			in: store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", Transport: "tls",
				Services: []string{"ssh=tcp"}, Source: "127.0.0.1:6000",
				LastSeen: t0.Add(time.Hour), FirstSeen: t0.Add(time.Hour)},
			want: store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", Transport: "tls",
				Services: []string{"ssh=tcp"}, Source: "127.0.0.1:6000",
				LastSeen: t0.Add(time.Hour), FirstSeen: t0},
		},
		{
			name: "no services",
			in:   store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", LastSeen: t0.Add(2 * time.Hour)},
			want: store.Agent{Name: "db1", ID: "spiffe://td/agent/db1", LastSeen: t0.Add(2 * time.Hour), FirstSeen: t0},
		},
	}
	for _, s := range steps {
		if err := d.UpsertAgent(ctx, s.in); err != nil {
			t.Fatalf("%s: UpsertAgent: %v", s.name, err)
		}
		got, err := d.Agent(ctx, "db1")
		if err != nil {
			t.Fatalf("%s: Agent: %v", s.name, err)
		}
		if !agentEqual(got, s.want) {
			t.Fatalf("%s: got %+v, want %+v", s.name, got, s.want)
		}
	}

	// A second agent, listed in name order.
	if err := d.UpsertAgent(ctx, store.Agent{Name: "app", Services: []string{"a=tcp"}, LastSeen: t0}); err != nil {
		t.Fatalf("UpsertAgent app: %v", err)
	}
	as, err := d.Agents(ctx)
	if err != nil {
		t.Fatalf("Agents: %v", err)
	}
	var names []string
	for _, a := range as {
		names = append(names, a.Name)
	}
	if want := []string{"app", "db1"}; !slices.Equal(names, want) {
		t.Fatalf("got agents %v, want %v", names, want)
	}
	if want := []string{"a=tcp"}; !slices.Equal(as[0].Services, want) {
		t.Fatalf("got app services %v, want %v", as[0].Services, want)
	}

	if _, err := d.Agent(ctx, "nobody"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Agent(nobody): got %v, want %v", err, store.ErrNotFound)
	}
	if err := d.UpsertAgent(ctx, store.Agent{}); err == nil {
		t.Fatal("UpsertAgent without name: got nil error, want one")
	}
}

func agentEqual(a, b store.Agent) bool {
	return a.Name == b.Name && a.ID == b.ID && a.Transport == b.Transport && a.Source == b.Source &&
		slices.Equal(a.Services, b.Services) && a.LastSeen.Equal(b.LastSeen) && a.FirstSeen.Equal(b.FirstSeen)
}

func TestRecordIssued(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	now := time.Now().Truncate(time.Microsecond)
	in := store.Issued{Serial: "0a1b", ID: "spiffe://td/user/ann", Kind: store.KindUser,
		NotAfter: now.Add(8 * time.Hour), IssuedAt: now}
	if err := d.RecordIssued(ctx, in); err != nil {
		t.Fatalf("RecordIssued: %v", err)
	}
	got, err := d.IssuedBySerial(ctx, "0a1b")
	if err != nil {
		t.Fatalf("IssuedBySerial: %v", err)
	}
	if got.Serial != in.Serial || got.ID != in.ID || got.Kind != in.Kind ||
		!got.NotAfter.Equal(in.NotAfter) || !got.IssuedAt.Equal(in.IssuedAt) {
		t.Fatalf("got %+v, want %+v", got, in)
	}
	if err := d.RecordIssued(ctx, in); err == nil {
		t.Fatal("duplicate serial: got nil error, want one")
	}
	if _, err := d.IssuedBySerial(ctx, "ffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("missing serial: got %v, want %v", err, store.ErrNotFound)
	}
	if err := d.RecordIssued(ctx, store.Issued{ID: "x"}); err == nil {
		t.Fatal("empty serial: got nil error, want one")
	}
}

func TestPrune(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	now := time.Now()
	tokens := map[string]struct {
		expires time.Time
		pruned  bool
	}{
		"expired long ago":   {expires: now.Add(-25 * time.Hour), pruned: true},
		"expired recently":   {expires: now.Add(-23 * time.Hour)},
		"not expired":        {expires: now.Add(time.Hour)},
		"expired just now":   {expires: now.Add(-time.Second)},
		"expired a week ago": {expires: now.Add(-7 * 24 * time.Hour), pruned: true},
	}
	for id, tok := range tokens {
		if err := d.UseToken(ctx, id, "db1", tok.expires); err != nil {
			t.Fatalf("UseToken(%s): %v", id, err)
		}
	}
	n, err := d.Prune(ctx, now)
	if err != nil {
		t.Fatalf("Prune: %v", err)
	}
	if n != 2 {
		t.Fatalf("got %d pruned, want 2", n)
	}
	for id, tok := range tokens {
		t.Run(id, func(t *testing.T) {
			// A pruned id can be marked again; a kept one is still used.
			err := d.UseToken(ctx, id, "db1", tok.expires)
			if tok.pruned && err != nil {
				t.Fatalf("got %v, want pruned token usable", err)
			}
			if !tok.pruned && !errors.Is(err, store.ErrTokenUsed) {
				t.Fatalf("got %v, want %v", err, store.ErrTokenUsed)
			}
		})
	}
}

func TestPragmas(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	pragmas := map[string]struct{ want string }{
		"journal_mode": {want: "wal"},
		"foreign_keys": {want: "1"},
		"busy_timeout": {want: "5000"},
	}
	for name, p := range pragmas {
		t.Run(name, func(t *testing.T) {
			var got string
			if err := d.db.QueryRowContext(ctx, "PRAGMA "+name).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != p.want {
				t.Fatalf("got %s, want %s", got, p.want)
			}
		})
	}
	_, err := d.db.ExecContext(ctx, `INSERT INTO agent_services (agent, position, service) VALUES ('ghost', 0, 'x=tcp')`)
	if err == nil {
		t.Fatal("service of a missing agent: got nil error, want a foreign key error")
	}
}

func TestOpenOddPath(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a?b #c%20", "postern.db")
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	d := openTest(t, path)
	if err := d.Ping(context.Background()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if d.Path() != path {
		t.Fatalf("got path %q, want %q", d.Path(), path)
	}
}

func TestOpenMissingDir(t *testing.T) {
	_, err := Open(context.Background(), filepath.Join(t.TempDir(), "no", "such", "dir", "x.db"))
	if err == nil {
		t.Fatal("got nil error, want one")
	}
	if !strings.Contains(err.Error(), "opening store") {
		t.Fatalf("got %q, want it to say what failed", err)
	}
}

func apiKeyEqual(a, b store.APIKey) bool {
	return a.KeyID == b.KeyID && a.ID == b.ID && slices.Equal(a.Groups, b.Groups) &&
		slices.Equal(a.SecretHash, b.SecretHash) && a.CreatedAt.Equal(b.CreatedAt) &&
		a.ExpiresAt.Equal(b.ExpiresAt) && a.RevokedAt.Equal(b.RevokedAt)
}

func TestAPIKeys(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	t0 := time.Now().Truncate(time.Microsecond).UTC()
	keys := []store.APIKey{
		{KeyID: "k1", ID: "spiffe://td/workload/ci", Groups: []string{"deployers", "ci"},
			SecretHash: []byte{1, 2, 3}, CreatedAt: t0},
		{KeyID: "k2", ID: "spiffe://td/user/ann", SecretHash: []byte{4},
			CreatedAt: t0.Add(time.Second), ExpiresAt: t0.Add(time.Hour)},
	}
	for _, k := range keys {
		if err := d.CreateAPIKey(ctx, k); err != nil {
			t.Fatalf("CreateAPIKey(%s): %v", k.KeyID, err)
		}
	}
	for _, want := range keys {
		got, err := d.APIKey(ctx, want.KeyID)
		if err != nil {
			t.Fatalf("APIKey(%s): %v", want.KeyID, err)
		}
		if !apiKeyEqual(got, want) {
			t.Fatalf("APIKey(%s): got %+v, want %+v", want.KeyID, got, want)
		}
	}
	if _, err := d.APIKey(ctx, "nope"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("APIKey(nope): got %v, want %v", err, store.ErrNotFound)
	}

	// Revocation keeps the first time.
	if err := d.RevokeAPIKey(ctx, "k1", t0.Add(time.Minute)); err != nil {
		t.Fatalf("RevokeAPIKey: %v", err)
	}
	if err := d.RevokeAPIKey(ctx, "k1", t0.Add(time.Hour)); err != nil {
		t.Fatalf("second RevokeAPIKey: %v", err)
	}
	got, err := d.APIKey(ctx, "k1")
	if err != nil {
		t.Fatal(err)
	}
	if want := t0.Add(time.Minute); !got.RevokedAt.Equal(want) {
		t.Fatalf("got revoked at %s, want %s", got.RevokedAt, want)
	}
	if err := d.RevokeAPIKey(ctx, "nope", t0); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("RevokeAPIKey(nope): got %v, want %v", err, store.ErrNotFound)
	}

	all, err := d.APIKeys(ctx)
	if err != nil {
		t.Fatalf("APIKeys: %v", err)
	}
	var ids []string
	for _, k := range all {
		ids = append(ids, k.KeyID)
	}
	if want := []string{"k1", "k2"}; !slices.Equal(ids, want) {
		t.Fatalf("got keys %v, want %v (oldest first)", ids, want)
	}
	if want := []string{"deployers", "ci"}; !slices.Equal(all[0].Groups, want) {
		t.Fatalf("got groups %v, want %v", all[0].Groups, want)
	}
}

func TestCreateAPIKeyRefused(t *testing.T) {
	ctx := context.Background()
	d := openTest(t, testPath(t))
	ok := store.APIKey{KeyID: "k1", ID: "spiffe://td/workload/ci", SecretHash: []byte{1}, Groups: []string{"a"}}
	if err := d.CreateAPIKey(ctx, ok); err != nil {
		t.Fatal(err)
	}
	tests := map[string]store.APIKey{
		"duplicate id":   ok,
		"empty id":       {ID: "spiffe://td/workload/ci", SecretHash: []byte{1}},
		"no spiffe id":   {KeyID: "k2", SecretHash: []byte{1}},
		"no secret hash": {KeyID: "k3", ID: "spiffe://td/workload/ci"},
	}
	for name, k := range tests {
		t.Run(name, func(t *testing.T) {
			if err := d.CreateAPIKey(ctx, k); err == nil {
				t.Fatal("got nil error, want one")
			}
		})
	}
	// The failed duplicate left the first key and its groups as they were.
	got, err := d.APIKey(ctx, "k1")
	if err != nil || !slices.Equal(got.Groups, ok.Groups) {
		t.Fatalf("got %+v, %v; want the first key unchanged", got, err)
	}
}

// TestAPIKeyRevokedFromOtherHandle stands for `postern apikey revoke`
// writing while the gateway reads.
func TestAPIKeyRevokedFromOtherHandle(t *testing.T) {
	ctx := context.Background()
	path := testPath(t)
	gw, admin := openTest(t, path), openTest(t, path)
	if err := admin.CreateAPIKey(ctx, store.APIKey{KeyID: "k", ID: "spiffe://td/workload/ci", SecretHash: []byte{1}}); err != nil {
		t.Fatal(err)
	}
	if k, err := gw.APIKey(ctx, "k"); err != nil || !k.RevokedAt.IsZero() {
		t.Fatalf("gateway sees %+v, %v; want an unrevoked key", k, err)
	}
	if err := admin.RevokeAPIKey(ctx, "k", time.Now()); err != nil {
		t.Fatal(err)
	}
	if k, err := gw.APIKey(ctx, "k"); err != nil || k.RevokedAt.IsZero() {
		t.Fatalf("gateway sees %+v, %v; want the key revoked", k, err)
	}
}
