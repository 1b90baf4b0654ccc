package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/postern/postern/gateway/audit/ui"
)

// runAuditUI serves the auditors' web page (gateway/audit/ui) until ctx
// ends. The page has no login, so it listens on loopback unless told
// otherwise.
func runAuditUI(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlags("audit ui", auditUIUsage+" [--allow-remote]", stderr)
	listen := fs.String("listen", "127.0.0.1:8082", "address to serve the page on")
	allowRemote := fs.Bool("allow-remote", false, "allow a --listen address other than loopback (the page has no login: put it behind one)")
	af := addAuditFlags(fs, true)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("audit ui takes no arguments, got %q", fs.Args())
	}
	loopback, err := isLoopback(*listen)
	if err != nil {
		return usagef("--listen %q: %v", *listen, err)
	}
	if !loopback && !*allowRemote {
		return usagef("--listen %q is not a loopback address, and the page has no login: use 127.0.0.1:PORT, or --allow-remote behind an authenticating proxy", *listen)
	}
	keys, err := af.keys()
	if err != nil {
		return err
	}
	a, done, err := af.open(ctx)
	if err != nil {
		return err
	}
	defer done()
	a.Keys = keys

	h := ui.Handler(a)
	if !*allowRemote {
		h = ui.LocalOnly(h)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return errorf("audit ui: listening", err)
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		ErrorLog:          slog.NewLogLogger(slog.NewTextHandler(stderr, nil), slog.LevelWarn),
		BaseContext:       func(net.Listener) context.Context { return ctx },
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	fmt.Fprintf(stdout, "audit ui: serving http://%s/\n", ln.Addr())

	select {
	case err := <-served:
		return errorf("audit ui: serving", err)
	case <-ctx.Done():
	}
	shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdown); err != nil {
		srv.Close() // requests still running after the grace period
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return errorf("audit ui: serving", err)
	}
	return nil
}

// isLoopback reports whether the listen address addr is on loopback only:
// localhost, or a loopback IP. An empty host means every interface.
func isLoopback(addr string) (bool, error) {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false, err
	}
	if strings.EqualFold(host, "localhost") {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}
