package policy

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"time"

	"github.com/fsnotify/fsnotify"
)

// debounce is how long Watch waits after the last change in the directory
// before it reads the file, so that a burst of events reloads once.
const debounce = 100 * time.Millisecond

// Watch keeps e's policy in step with the file at path until ctx is done.
// It watches the file's directory, so that it sees files replaced by
// rename (as editors save them) and symbolic links swapped (as Kubernetes
// updates a mounted ConfigMap) as well as files written in place. After a
// change settles it reads the file and, if its contents differ from those
// last seen, parses it: a valid policy replaces e's and is logged as
// "policy reloaded"; an invalid one is refused, each problem logged, and
// the previous policy stays in force.
//
// When Watch starts it also loads the file if its contents differ from
// those e's policy was parsed from. Watch returns an error only when it
// cannot start watching; otherwise it returns nil once ctx is done.
func Watch(ctx context.Context, path string, e *Engine, logger *slog.Logger) error {
	if logger == nil {
		logger = slog.Default()
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("starting policy watcher: %w", err)
	}
	defer w.Close()
	dir := filepath.Dir(path)
	if err := w.Add(dir); err != nil {
		return fmt.Errorf("watching policy directory %s: %w", dir, err)
	}
	// A link to a file in another directory: watch there too, best effort.
	if target, err := filepath.EvalSymlinks(path); err == nil {
		if tdir := filepath.Dir(target); tdir != filepath.Clean(dir) {
			_ = w.Add(tdir)
		}
	}

	wt := &watcher{path: path, engine: e, logger: logger}
	if p := e.Policy(); p != nil {
		wt.last, wt.haveLast = p.sum, true
	}
	wt.check()

	timer := time.NewTimer(debounce)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-w.Events:
			if !ok {
				return nil
			}
			timer.Reset(debounce)
		case err, ok := <-w.Errors:
			if !ok {
				return nil
			}
			logger.Warn("watching policy", "path", path, "error", err)
		case <-timer.C:
			wt.check()
		}
	}
}

// watcher is Watch's state between checks.
type watcher struct {
	path     string
	engine   *Engine
	logger   *slog.Logger
	last     [sha256.Size]byte // contents last parsed
	haveLast bool
	lastErr  string // last read error logged, to log each once
}

// check reloads the file if its contents changed since last seen.
func (w *watcher) check() {
	data, err := readFile(w.path)
	if err != nil {
		if msg := err.Error(); msg != w.lastErr {
			w.lastErr = msg
			w.logger.Error("policy file unreadable, keeping the previous policy", "path", w.path, "error", err)
		}
		return
	}
	w.lastErr = ""
	sum := sha256.Sum256(data)
	if w.haveLast && sum == w.last {
		return
	}
	w.last, w.haveLast = sum, true

	p, err := Parse(data)
	if err != nil {
		var perr *Error
		if !errors.As(err, &perr) {
			w.logger.Error("policy refused, keeping the previous policy", "path", w.path, "error", err)
			return
		}
		for _, pr := range perr.Problems {
			w.logger.Error("policy refused, keeping the previous policy",
				"path", w.path, "line", pr.Line, "column", pr.Column, "problem", pr.Message)
		}
		return
	}
	w.engine.Set(p)
	w.logger.Info("policy reloaded", "path", w.path, "rules", p.Len())
}
