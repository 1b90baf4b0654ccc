package ui_test

import (
	"context"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/postern/postern/gateway/audit/ui"
)

// chromium is Debian's Chromium, which CI installs.
const chromium = "/usr/bin/chromium"

// browser starts headless Chromium for t and returns a context for its
// tab. The flags are those this project's machines need: the network is
// closed, so nothing in the background may try to reach out.
func browser(t *testing.T) context.Context {
	t.Helper()
	if _, err := os.Stat(chromium); err != nil {
		t.Fatalf("this test drives headless Chromium at %s, which is missing: install Debian's chromium package "+
			"(.ci/run installs it; or apt-get install -y chromium) (%v)", chromium, err)
	}
	profile, err := os.MkdirTemp("", "postern-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Chromium's children may write to the profile for a moment after
		// the browser stops.
		for range 50 {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	})
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.Flag("disable-quic", true),
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.UserDataDir(profile),
		chromedp.WindowSize(1400, 1000),
	)
	t.Cleanup(cancelAlloc)
	ctx, cancel := chromedp.NewContext(allocCtx, chromedp.WithLogf(t.Logf))
	t.Cleanup(cancel)
	// The first Run starts the browser, which lives as long as ctx: no
	// deadline on it; the steps get theirs.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		t.Fatalf("starting %s: %v", chromium, err)
	}
	return ctx
}

// page is a browser tab with what its console said.
type page struct {
	t   *testing.T
	ctx context.Context

	mu      sync.Mutex
	console []chromedp.ConsoleMessage
}

func newPage(t *testing.T) *page {
	p := &page{t: t, ctx: browser(t)}
	msgs := chromedp.Console(p.ctx)
	go func() {
		for m, err := range msgs {
			if err != nil {
				return
			}
			p.mu.Lock()
			p.console = append(p.console, m)
			p.mu.Unlock()
		}
	}()
	return p
}

// do runs steps, failing the test after 20 seconds.
func (p *page) do(what string, steps ...chromedp.Action[chromedp.Void]) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, steps...); err != nil {
		p.t.Fatalf("%s: %v", what, err)
	}
}

// wait waits until the JavaScript expression is true.
func (p *page) wait(what, expr string) {
	p.t.Helper()
	p.do("waiting for "+what, func(ctx context.Context, t *chromedp.Target) (chromedp.Void, error) {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingTimeout(15*time.Second), chromedp.WithPollingInterval(20*time.Millisecond))(ctx, t)
		return chromedp.Void{}, err
	})
}

// eval returns the value of the JavaScript expression.
func eval[T any](p *page, expr string) T {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		p.t.Fatalf("evaluating %s: %v", expr, err)
	}
	return v
}

// screenshot saves the page as a PNG under the artifacts directory.
func (p *page) screenshot(dir, name string) {
	p.t.Helper()
	ctx, cancel := context.WithTimeout(p.ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
	if err != nil {
		p.t.Fatalf("screenshot: %v", err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, png, 0o644); err != nil {
		p.t.Fatalf("saving screenshot: %v", err)
	}
	p.t.Logf("screenshot: %s", path)
}

// problems returns what the console said that a working page does not: an
// exception, an error (a refused script or style, a failed request), a
// warning about the Content-Security-Policy.
func (p *page) problems() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []string
	for _, m := range p.console {
		if m.IsException() || m.Type == chromedp.ConsoleError || strings.Contains(m.Text, "Content Security Policy") {
			out = append(out, m.String())
		}
	}
	return out
}

func artifacts(t *testing.T) string {
	dir := os.Getenv("POSTERN_ARTIFACTS")
	if dir == "" {
		return t.TempDir()
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// TestBrowser drives the page in headless Chromium over real recordings:
// the list, a filter, the verification badges, and the player.
func TestBrowser(t *testing.T) {
	begin := time.Now()
	out := artifacts(t)
	f := newFixture(t)
	srv := httptest.NewServer(ui.Handler(f.archive))
	defer srv.Close()
	p := newPage(t)
	t.Logf("browser started in %v", time.Since(begin).Round(time.Millisecond))

	// The list shows every session, newest first.
	p.do("opening the page", chromedp.Navigate(srv.URL+"/"))
	p.wait("the session list", `document.querySelectorAll('#sessions tbody tr').length === 9`)
	if got, want := eval[[]string](p, `[...document.querySelectorAll('#sessions tbody tr')].map(r => r.dataset.id)`), f.newestFirst(); !slices.Equal(got, want) {
		t.Fatalf("list shows %v, want %v", got, want)
	}

	// Badges: verified lazily, tampered with the reason on hover.
	p.wait("every badge", `[...document.querySelectorAll('#sessions .badge')].every(b => b.dataset.status)`)
	badge := func(id string) (text, title string) {
		v := eval[[]string](p, `(() => { const b = document.querySelector('tr[data-id="`+id+`"] .badge'); return [b.textContent, b.title]; })()`)
		return v[0], v[1]
	}
	if text, title := badge("pg-tampered"); text != "✗ tampered" || !strings.Contains(title, "recording broken at record") {
		t.Errorf("tampered badge says %q (%q), want ✗ tampered with the reason", text, title)
	}
	if text, title := badge("pg-1"); text != "✓ sealed" || !strings.Contains(title, "seal signed by audit key") {
		t.Errorf("pg-1 badge says %q (%q), want ✓ sealed", text, title)
	}
	if text, _ := badge("open-1"); text != "● open" {
		t.Errorf("open-1 badge says %q, want ● open", text)
	}
	p.screenshot(out, "audit-ui-list.png")

	// A filter by identity glob shows only the matching sessions.
	p.do("filtering by identity",
		chromedp.SetValue(chromedp.CSS("#f-identity"), "spiffe://postern.local/user/a*"),
		chromedp.Click(chromedp.CSS("#apply")))
	p.wait("the filtered list", `document.querySelectorAll('#sessions tbody tr').length === 3`)
	if got := eval[[]string](p, `[...document.querySelectorAll('#sessions tbody tr td.identity')].map(td => td.textContent)`); !slices.Equal(got, []string{user("ann"), user("ann"), user("ann")}) {
		t.Errorf("filtered list shows identities %v, want only ann's", got)
	}
	if h := eval[string](p, `location.hash`); !strings.Contains(h, "identity=") {
		t.Errorf("the filter is not in the address: %q", h)
	}
	p.do("clearing the filter", chromedp.Click(chromedp.CSS("#clear")))
	p.wait("the whole list again", `document.querySelectorAll('#sessions tbody tr').length === 9`)

	// The player: a Postgres session, played at once.
	p.do("opening pg-1", chromedp.Click(chromedp.CSS(`tr[data-id="pg-1"]`)), chromedp.WaitVisible(chromedp.CSS("#player-view")))
	p.wait("the timeline", `document.querySelectorAll('#timeline-marks .mark').length >= 6`)
	p.wait("the player's badge", `document.querySelector('#p-badge').textContent === '✓ sealed'`)
	p.do("playing at instant speed",
		chromedp.SetValue(chromedp.CSS("#speed"), "instant"),
		chromedp.Click(chromedp.CSS("#play")))
	p.wait("the SQL", `[...document.querySelectorAll('#transcript pre.sql')].some(e => e.textContent === 'SELECT id, name FROM users WHERE id < $1')`)
	cells := eval[[]string](p, `[...document.querySelectorAll('#transcript table.result')].map(t => [...t.querySelectorAll('th, td')].map(c => c.textContent).join('|'))`)
	if want := []string{"id|name|1|ann|2|NULL", "now|2026-03-04 05:00:01+00"}; !slices.Equal(cells, want) {
		t.Errorf("result tables show %q, want %q", cells, want)
	}
	text := eval[string](p, `document.querySelector('#transcript').textContent`)
	for _, want := range []string{"$1 = 3", "ERROR 42P01: relation \"missing\" does not exist", "SELECT 2", "client → service: 420 B", "Sealed with audit key"} {
		if !strings.Contains(text, want) {
			t.Errorf("transcript lacks %q", want)
		}
	}
	if cur := eval[string](p, `document.querySelector('#transcript .event.current').dataset.type`); cur != "recording.seal" {
		t.Errorf("after instant play the current event is %q, want the last (recording.seal)", cur)
	}
	p.screenshot(out, "audit-ui-player.png")

	// Jump: a click on a query's mark makes it the current event.
	p.do("jumping to the first query", chromedp.Click(chromedp.CSS(`#timeline-marks .mark.t-postgres-query`)))
	p.wait("the jump", `document.querySelector('#transcript .event.current').dataset.seq === '1'`)
	if n := eval[int](p, `document.querySelectorAll('#transcript .event').length`); n != 2 {
		t.Errorf("after jumping to event 1 the transcript shows %d events, want 2", n)
	}
	// Timed play at 10×: 1.2 s of session in about 0.12 s.
	p.do("playing at 10×", chromedp.SetValue(chromedp.CSS("#speed"), "10"), chromedp.Click(chromedp.CSS("#play")))
	p.wait("the end", `document.querySelector('#transcript .event.current').dataset.type === 'recording.seal' && document.querySelector('#play').textContent.includes('Play')`)

	// Recorded markup shows as text and runs nothing.
	p.do("opening pg-3", chromedp.Navigate(srv.URL+"/#/session/pg-3"))
	p.wait("pg-3's events", `document.querySelectorAll('#timeline-marks .mark').length > 0`)
	p.do("playing pg-3", chromedp.SetValue(chromedp.CSS("#speed"), "instant"), chromedp.Click(chromedp.CSS("#play")))
	p.wait("pg-3's SQL", `document.querySelector('#transcript pre.sql') !== null`)
	if got := eval[string](p, `document.querySelector('#transcript pre.sql').textContent`); got != "SELECT '<script>window.pwned=1</script>' AS x" {
		t.Errorf("SQL shows as %q", got)
	}
	if got := eval[string](p, `document.querySelector('#transcript table.result td').textContent`); got != `<img src=x onerror="window.pwned=2">` {
		t.Errorf("result cell shows as %q", got)
	}
	if got := eval[bool](p, `window.pwned === undefined && document.querySelector('#transcript img, #transcript script, #transcript b') === null`); !got {
		t.Errorf("recorded markup became elements or ran")
	}

	// HTTP and gRPC: method, path, status, decision.
	for id, wants := range map[string][]string{
		"http-1": {"GET /api/items?page=2 → 200", "12.5 ms", "DELETE /api/items/7 → 403", "Denied: rule default-deny: no rule allows DELETE"},
		"grpc-1": {"/orders.Orders/Get → 0 OK", "/orders.Orders/Delete → 7 PERMISSION_DENIED", "denied by policy"},
	} {
		p.do("opening "+id, chromedp.Navigate(srv.URL+"/#/session/"+id))
		p.wait(id+"'s events", `document.querySelectorAll('#timeline-marks .mark').length > 0 && document.querySelector('#p-title').textContent === '`+id+`'`)
		p.do("playing "+id, chromedp.SetValue(chromedp.CSS("#speed"), "instant"), chromedp.Click(chromedp.CSS("#play")))
		p.wait(id+" played", `document.querySelector('#transcript .event.current').dataset.type === 'recording.seal'`)
		text := eval[string](p, `[...document.querySelectorAll('#transcript .event')].map(e => e.innerText).join('\n')`)
		for _, want := range wants {
			if !strings.Contains(text, want) {
				t.Errorf("%s: transcript lacks %q:\n%s", id, want, text)
			}
		}
		if id == "http-1" {
			p.screenshot(out, "audit-ui-http.png")
		}
	}

	// A tampered recording: the player warns.
	p.do("opening pg-tampered", chromedp.Navigate(srv.URL+"/#/session/pg-tampered"))
	p.wait("the warning", `!document.querySelector('#p-warning').hidden && document.querySelector('#p-badge').textContent === '✗ tampered'`)
	t.Logf("tampered recording, as the player says: %s", eval[string](p, `document.querySelector('#p-warning').textContent`))
	p.screenshot(out, "audit-ui-tampered.png")

	// Back to the list.
	p.do("going back", chromedp.Click(chromedp.CSS("#back")))
	p.wait("the list", `!document.querySelector('#list-view').hidden && document.querySelectorAll('#sessions tbody tr').length === 9`)

	if probs := p.problems(); len(probs) > 0 {
		t.Errorf("the console reported problems:\n%s", strings.Join(probs, "\n"))
	}
	t.Logf("browser test took %v", time.Since(begin).Round(time.Millisecond))
}
