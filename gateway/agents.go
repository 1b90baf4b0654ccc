package gateway

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/postern/postern/gateway/store"
	"github.com/postern/postern/protocols/tunnel"
)

func (s *Server) serveQUIC(ctx context.Context) error {
	for {
		sess, err := s.quicLn.Accept(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accepting quic session: %w", err)
		}
		s.conns.Add(1)
		go func() {
			defer s.conns.Done()
			defer func() {
				if v := recover(); v != nil {
					s.metrics.panics.Inc()
					s.log.Error("tunnel handler panicked", "agent", sess.Peer().String(), "panic", fmt.Sprint(v))
					sess.Close()
				}
			}()
			s.serveAgent(ctx, sess)
		}()
	}
}

// serveAgent runs one agent's tunnel session: it reads the control stream
// (announcements and heartbeats) and keeps the agent in the registry while
// the session lives.
func (s *Server) serveAgent(ctx context.Context, sess tunnel.Session) {
	defer sess.Close()
	name := strings.TrimPrefix(sess.Peer().Path(), "/agent/")
	log := s.log.With("agent", name, "transport", sess.Transport(), "remote", sess.RemoteAddr().String())

	actx, cancel := context.WithTimeout(ctx, s.cfg.HandshakeTimeout)
	st, err := sess.AcceptStream(actx)
	cancel()
	if err != nil {
		log.Warn("agent opened no control stream", "err", err)
		return
	}
	defer st.Close()
	h, err := tunnel.ReadHeader(st)
	if err != nil || h.Kind != tunnel.KindControl {
		log.Warn("agent's first stream is not a control stream", "err", err, "kind", h.Kind)
		return
	}
	ctl := tunnel.NewControl(st)
	a := &agentConn{name: name, session: sess, since: time.Now()}
	a.lastSeen.Store(time.Now().UnixNano())

	s.reg.add(a)
	s.metrics.agents.Set(float64(s.reg.count()))
	log.Info("agent connected")
	defer func() {
		s.reg.remove(a)
		s.metrics.agents.Set(float64(s.reg.count()))
		log.Info("agent disconnected")
	}()
	stop := context.AfterFunc(ctx, func() { sess.Close() })
	defer stop()
	go func() { <-sess.Done(); st.Close() }()

	for {
		m, err := ctl.Receive()
		if err != nil {
			return
		}
		a.lastSeen.Store(time.Now().UnixNano())
		switch m.Type {
		case tunnel.TypeAnnounce:
			s.reg.announce(a, m.Services)
			names := make([]string, 0, len(m.Services))
			for _, sv := range m.Services {
				names = append(names, sv.Name+"="+sv.Protocol)
			}
			log.Info("agent announced services", "services", strings.Join(names, ","))
			if err := ctl.Send(tunnel.Message{Type: tunnel.TypeAnnounced}); err != nil {
				return
			}
			if err := s.data.Store.UpsertAgent(ctx, store.Agent{Name: name, ID: sess.Peer().String(),
				Transport: sess.Transport(), Services: names, Source: sess.RemoteAddr().String(),
				LastSeen: time.Now()}); err != nil {
				log.Warn("recording agent", "err", err)
			}
		case tunnel.TypePing:
			if err := ctl.Send(tunnel.Message{Type: tunnel.TypePong, Seq: m.Seq}); err != nil {
				return
			}
		case tunnel.TypeDrain:
			if a.draining.Swap(true) {
				continue
			}
			s.drainUpstreams(a)
			log.Info("agent draining: no new streams go to it")
			if err := ctl.Send(tunnel.Message{Type: tunnel.TypeDraining}); err != nil {
				return
			}
		}
	}
}
