package agent

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"time"

	"github.com/postern/postern/protocols/postgres/login"
	"github.com/postern/postern/protocols/tcp"
	"github.com/postern/postern/protocols/tunnel"
)

// servePostgres serves a stream of a postgres service. The gateway has
// already spoken the client's startup and decided the role and database:
// the agent logs in as that role with the secret only it holds, tells the
// gateway what the server said, and relays bytes. A stream that carries a
// backend key instead asks for a CancelRequest.
//
// Not reaching the server is a Reply error, so the gateway may try another
// agent; a login the server refused is a Reply OK followed by the server's
// ErrorResponse, for the client to see.
func (a *Agent) servePostgres(ctx context.Context, st net.Conn, h tunnel.Header, svc Service, log *slog.Logger) {
	cfg := svc.loginConfig(a.cfg.DialTimeout)
	if v, ok := h.Params[login.ParamCancel]; ok {
		pid, key, err := login.ParseCancelValue(v)
		if err != nil {
			log.Warn("reading postgres cancel request", "err", err)
			tunnel.WriteReply(st, tunnel.Reply{Error: err.Error()})
			return
		}
		if err := tunnel.WriteReply(st, tunnel.Reply{OK: true}); err != nil {
			return
		}
		if err := login.Cancel(ctx, cfg, pid, key); err != nil {
			log.Warn("sending postgres cancel request", "address", svc.Address, "err", err)
			return
		}
		log.Info("postgres cancel request sent", "pid", pid)
		return
	}

	user, database := h.Params[login.ParamUser], h.Params[login.ParamDatabase]
	if user == "" {
		tunnel.WriteReply(st, tunnel.Reply{Error: "postgres stream header names no database role"})
		return
	}
	params := map[string]string{}
	for k, v := range h.Params {
		if name, ok := strings.CutPrefix(k, login.ParamPrefix); ok && name != "" {
			params[name] = v
		}
	}
	log = log.With("role", user, "database", database)
	// The login may take up to the dial timeout; the reply must still go out.
	st.SetDeadline(time.Now().Add(a.cfg.DialTimeout + 5*time.Second))
	conn, err := login.Open(ctx, cfg, user, database, params)
	var refused *login.LoginError
	if err != nil && !errors.As(err, &refused) {
		log.Warn("logging in to postgres", "address", svc.Address, "err", err)
		tunnel.WriteReply(st, tunnel.Reply{Error: fmt.Sprintf("agent %s cannot reach %s: %v", a.cfg.Name, h.Service, err)})
		return
	}
	if err := tunnel.WriteReply(st, tunnel.Reply{OK: true}); err != nil {
		if conn != nil {
			conn.Close()
		}
		return
	}
	if refused != nil {
		log.Info("postgres login refused", "code", refused.Response.Code, "err", err)
		if err := login.WriteError(st, refused.Response); err != nil {
			log.Warn("sending login refusal to gateway", "err", err)
		}
		return
	}
	if err := login.WriteStartup(st, conn.Startup); err != nil {
		log.Warn("sending login result to gateway", "err", err)
		conn.Close()
		return
	}
	st.SetDeadline(time.Time{})
	log.Debug("session started", "source", h.Source, "pid", conn.Startup.PID)
	start := time.Now()
	// conn.Conn, not conn: the relay half-closes through CloseWrite, which
	// the embedding would hide.
	counts, err := (&tcp.Relay{}).Run(ctx, st, conn.Conn)
	log.Info("session ended", "bytes_in", counts.In, "bytes_out", counts.Out, "duration", time.Since(start).String(), "err", errString(err))
}
