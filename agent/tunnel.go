package agent

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/postern/postern/protocols"
	"github.com/postern/postern/protocols/tcp"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/quic"
	"github.com/postern/postern/protocols/tunnel/tlsmux"
)

func (a *Agent) tunnelTLSConfig() *tls.Config {
	c := tlsconfig.MTLSClientConfig(a.source, a.bundle, tlsconfig.AdaptMatcher(matchGateway(a.id.TrustDomain())))
	c.MinVersion = tls.VersionTLS13
	c.NextProtos = []string{tunnel.ALPN}
	return c
}

// dial opens a tunnel session with the configured transport; auto tries
// QUIC first and falls back to TLS + yamux.
func (a *Agent) dial(ctx context.Context) (tunnel.Session, error) {
	switch a.cfg.Transport {
	case TransportQUIC:
		return quic.Dial(ctx, a.cfg.Gateway, a.tunnelTLSConfig(), a.cfg.Tunnel)
	case TransportTLS:
		return tlsmux.Dial(ctx, a.cfg.Gateway, a.tunnelTLSConfig(), a.cfg.Tunnel)
	}
	qctx, cancel := context.WithTimeout(ctx, a.cfg.QUICTimeout)
	sess, err := quic.Dial(qctx, a.cfg.Gateway, a.tunnelTLSConfig(), a.cfg.Tunnel)
	cancel()
	if err == nil {
		return sess, nil
	}
	if ctx.Err() != nil {
		return nil, ctx.Err()
	}
	a.log.Info("QUIC did not get through; falling back to TLS", "gateway", a.cfg.Gateway, "err", err)
	sess, terr := tlsmux.Dial(ctx, a.cfg.Gateway, a.tunnelTLSConfig(), a.cfg.Tunnel)
	if terr != nil {
		return nil, fmt.Errorf("dialing QUIC: %v; dialing TLS: %w", err, terr)
	}
	return sess, nil
}

// serve runs one tunnel session until it dies or ctx is done: it announces
// the services, sends heartbeats and serves every stream the gateway opens.
// When ctx is done it drains before it closes the session: streams, the
// heartbeat and the accepting of streams outlive ctx until the drain ends.
func (a *Agent) serve(ctx context.Context, sess tunnel.Session) {
	defer sess.Close()
	log := a.log.With("transport", sess.Transport(), "gateway", a.cfg.Gateway)
	ctl, err := a.openControl(ctx, sess)
	if err != nil {
		log.Warn("opening control stream", "err", err)
		return
	}
	life, end := context.WithCancel(context.WithoutCancel(ctx))
	go func() { <-sess.Done(); end() }()
	go a.heartbeat(life, sess, ctl)
	draining := make(chan struct{}, 1)
	go func() { // the gateway's acknowledgements, pongs and anything else it says
		for {
			m, err := ctl.Receive()
			if err != nil {
				sess.Close()
				return
			}
			switch m.Type {
			case tunnel.TypeAnnounced:
				// Only now does the gateway route the services to this tunnel.
				log.Info("tunnel up", "gateway_id", sess.Peer().String(), "services", len(a.services))
				select {
				case a.connected <- sess.Transport():
				default:
				}
			case tunnel.TypeDraining:
				select {
				case draining <- struct{}{}:
				default:
				}
			}
		}
	}()
	var open atomic.Int64 // data streams being served
	var streams sync.WaitGroup
	defer func() {
		// The session is gone: the streams end with it, and none of them
		// outlives serve (nor Run).
		end()
		sess.Close()
		streams.Wait()
	}()
	go func() {
		select {
		case <-life.Done():
			return
		case <-ctx.Done():
		}
		a.drain(life, ctl, draining, &open, log)
		end()
	}()
	for {
		st, err := sess.AcceptStream(life)
		if err != nil {
			if ctx.Err() == nil {
				log.Warn("tunnel down", "err", err)
			}
			return
		}
		open.Add(1)
		streams.Add(1)
		go func() {
			defer streams.Done()
			defer open.Add(-1)
			a.serveStream(life, st)
		}()
	}
}

// drain tells the gateway that the agent is leaving and waits, at most
// DrainTimeout, for the streams open to end: once the gateway answers it
// sends no new ones, and it closes its idle ones and those that finish.
// A gateway that does not know the message never answers: the agent then
// waits out the timeout. It returns early when the session dies (life
// ends).
func (a *Agent) drain(life context.Context, ctl *tunnel.Control, draining <-chan struct{}, open *atomic.Int64, log *slog.Logger) {
	if a.cfg.DrainTimeout < 0 {
		return
	}
	if err := ctl.Send(tunnel.Message{Type: tunnel.TypeDrain}); err != nil {
		return
	}
	log.Info("draining: the gateway is asked to send no new streams", "streams", open.Load(),
		"timeout", a.cfg.DrainTimeout.String())
	deadline := time.NewTimer(a.cfg.DrainTimeout)
	defer deadline.Stop()
	select {
	case <-draining:
	case <-life.Done():
		return
	case <-deadline.C:
		log.Warn("drain timed out before the gateway answered; closing", "streams", open.Load())
		return
	}
	tick := time.NewTicker(drainPoll)
	defer tick.Stop()
	for open.Load() > 0 {
		select {
		case <-tick.C:
		case <-life.Done():
			return
		case <-deadline.C:
			log.Warn("drain timed out; closing the streams left", "streams", open.Load())
			return
		}
	}
	log.Info("drained: no stream left")
}

// drainPoll is how often a draining agent counts its open streams.
const drainPoll = 20 * time.Millisecond

func (a *Agent) openControl(ctx context.Context, sess tunnel.Session) (*tunnel.Control, error) {
	st, err := sess.OpenStream(ctx)
	if err != nil {
		return nil, err
	}
	if err := tunnel.WriteHeader(st, tunnel.Header{Kind: tunnel.KindControl}); err != nil {
		st.Close()
		return nil, err
	}
	ctl := tunnel.NewControl(st)
	if err := ctl.Send(a.announcement()); err != nil {
		st.Close()
		return nil, err
	}
	return ctl, nil
}

// announcement tells the gateway the agent's services and, for Postgres,
// how many rows of each query it records.
func (a *Agent) announcement() tunnel.Message {
	m := tunnel.Message{Type: tunnel.TypeAnnounce, Agent: a.cfg.Name}
	for _, s := range a.cfg.Services {
		ts := tunnel.Service{Name: s.Name, Protocol: s.Protocol}
		if s.Postgres != nil {
			ts.CaptureRows = s.Postgres.CaptureRows
		}
		m.Services = append(m.Services, ts)
	}
	return m
}

func (a *Agent) heartbeat(ctx context.Context, sess tunnel.Session, ctl *tunnel.Control) {
	t := time.NewTicker(a.cfg.Heartbeat)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := ctl.Send(tunnel.Message{Type: tunnel.TypePing, Seq: seq}); err != nil {
			sess.Close()
			return
		}
	}
}

// serveStream reads a data stream's header, dials the named local service,
// answers the gateway and relays.
func (a *Agent) serveStream(ctx context.Context, st net.Conn) {
	defer st.Close()
	defer func() {
		if v := recover(); v != nil {
			a.log.Error("stream handler panicked", "panic", fmt.Sprint(v))
		}
	}()
	st.SetDeadline(time.Now().Add(10 * time.Second))
	h, err := tunnel.ReadHeader(st)
	if err != nil {
		a.log.Warn("reading stream header", "err", err)
		tunnel.WriteReply(st, tunnel.Reply{Error: "reading stream header: " + err.Error()})
		return
	}
	svc, ok := a.services[h.Service]
	if !ok || h.Kind != tunnel.KindData {
		tunnel.WriteReply(st, tunnel.Reply{Error: fmt.Sprintf("agent %s does not serve %q", a.cfg.Name, h.Service)})
		return
	}
	log := a.log.With("session", h.Session, "service", h.Service, "identity", h.Identity)
	if svc.Protocol == protocols.Postgres {
		a.servePostgres(ctx, st, h, svc, log)
		return
	}
	local, err := a.dialLocal(ctx, svc)
	if err != nil {
		log.Warn("dialing local service", "address", svc.Address, "err", err)
		tunnel.WriteReply(st, tunnel.Reply{Error: fmt.Sprintf("agent %s cannot reach %s: %v", a.cfg.Name, h.Service, err)})
		return
	}
	if err := tunnel.WriteReply(st, tunnel.Reply{OK: true}); err != nil {
		local.Close()
		return
	}
	st.SetDeadline(time.Time{})
	log.Debug("session started", "source", h.Source)
	start := time.Now()
	counts, err := (&tcp.Relay{}).Run(ctx, st, local)
	log.Info("session ended", "bytes_in", counts.In, "bytes_out", counts.Out, "duration", time.Since(start).String(), "err", errString(err))
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// dialLocal connects to a service: TCP, and for an http or grpc service
// with upstream TLS, a TLS handshake offering the ALPN the gateway speaks
// inside the stream (http/1.1, or h2 for gRPC).
func (a *Agent) dialLocal(ctx context.Context, svc Service) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, a.cfg.DialTimeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", svc.Address)
	if err != nil || svc.TLS == nil {
		return c, err
	}
	name := svc.TLS.ServerName
	if name == "" {
		name, _, _ = net.SplitHostPort(svc.Address)
	}
	alpn := []string{"http/1.1"}
	if svc.Protocol == protocols.GRPC {
		alpn = []string{"h2"}
	}
	tc := tls.Client(c, &tls.Config{ServerName: name, RootCAs: svc.TLS.RootCAs, NextProtos: alpn, MinVersion: tls.VersionTLS12})
	if err := tc.HandshakeContext(ctx); err != nil {
		c.Close()
		return nil, fmt.Errorf("TLS handshake with the upstream: %w", err)
	}
	return tc, nil
}
