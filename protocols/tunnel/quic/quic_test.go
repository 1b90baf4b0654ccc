package quic_test

import (
	"context"
	"errors"
	"testing"
	"time"

	quicgo "github.com/quic-go/quic-go"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/quic"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("postern.local")
	gatewayID = spiffeid.RequireFromPath(td, "/gateway/gw")
	agentID   = spiffeid.RequireFromPath(td, "/agent/a1")
)

func TestALPN(t *testing.T) {
	tests := map[string]struct {
		serverALPN, clientALPN []string
		wantErr                bool
	}{
		"default on both sides": {},
		"explicit":              {serverALPN: []string{tunnel.ALPN}, clientALPN: []string{tunnel.ALPN}},
		"client speaks h3":      {clientALPN: []string{"h3"}, wantErr: true},
		"server speaks h3 too":  {serverALPN: []string{"h3", tunnel.ALPN}, clientALPN: []string{"h3"}, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ca := pkitest.NewCA(t, td)
			serverConf := tlsconfig.MTLSServerConfig(ca.SVID(t, gatewayID), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
			serverConf.NextProtos = tt.serverALPN
			clientConf := tlsconfig.MTLSClientConfig(ca.SVID(t, agentID), ca.Bundle(), tlsconfig.AuthorizeID(gatewayID))
			clientConf.NextProtos = tt.clientALPN
			cfg := &tunnel.Config{HandshakeTimeout: 60 * time.Second}

			ln, err := quic.Listen("127.0.0.1:0", serverConf, cfg)
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			go func() {
				if s, err := ln.Accept(ctx); err == nil {
					<-s.Done() // held until the listener closes
				}
			}()
			s, err := quic.Dial(ctx, ln.Addr().String(), clientConf, cfg)
			if tt.wantErr {
				if err == nil {
					s.Close()
					t.Fatal("got a session, want an error")
				}
				return
			}
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer s.Close()
			if got := s.Peer(); got != gatewayID {
				t.Errorf("got peer %v, want %v", got, gatewayID)
			}
		})
	}
}

// TestStatelessResetAfterRestart: a listener that vanishes without closing
// its sessions and comes back on the same port with the same stateless
// reset key ends its old sessions at their peers' next packet, not at
// their idle timeout.
func TestStatelessResetAfterRestart(t *testing.T) {
	ca := pkitest.NewCA(t, td)
	serverConf := tlsconfig.MTLSServerConfig(ca.SVID(t, gatewayID), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	clientConf := tlsconfig.MTLSClientConfig(ca.SVID(t, agentID), ca.Bundle(), tlsconfig.AuthorizeID(gatewayID))
	key := &[32]byte{1, 2, 3}
	cfg := &tunnel.Config{KeepAlive: 100 * time.Millisecond, IdleTimeout: time.Minute, StatelessResetKey: key}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	first, err := quic.Listen("127.0.0.1:0", serverConf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	addr := first.Addr().String()
	go first.Accept(ctx)
	s, err := quic.Dial(ctx, addr, clientConf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := first.Vanish(); err != nil {
		t.Fatal(err)
	}
	second, err := quic.Listen(addr, serverConf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer second.Close()
	defer first.Close()
	select {
	case <-s.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("the session to the vanished listener still lives after 10s (idle timeout: a minute)")
	}
}

// TestCloseEndsUnacceptedSessions: a session whose handshake was done but
// that was not accepted yet when the listener closes is closed, so that its
// peer's dial fails at once instead of waiting out its timeout.
func TestCloseEndsUnacceptedSessions(t *testing.T) {
	ca := pkitest.NewCA(t, td)
	serverConf := tlsconfig.MTLSServerConfig(ca.SVID(t, gatewayID), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	clientConf := tlsconfig.MTLSClientConfig(ca.SVID(t, agentID), ca.Bundle(), tlsconfig.AuthorizeID(gatewayID))
	cfg := &tunnel.Config{HandshakeTimeout: time.Minute}
	ln, err := quic.Listen("127.0.0.1:0", serverConf, cfg)
	if err != nil {
		t.Fatal(err)
	}
	dialed := make(chan error, 1)
	go func() {
		s, err := quic.Dial(context.Background(), ln.Addr().String(), clientConf, cfg)
		if err == nil {
			s.Close()
		}
		dialed <- err
	}()
	// Nobody accepts. A loopback handshake takes milliseconds; were it not
	// done by the Close, the dial would run into a timeout and the test
	// would fail, not pass.
	time.Sleep(time.Second)
	if err := ln.Close(); err != nil {
		t.Fatal(err)
	}
	err = <-dialed
	var closed *quicgo.ApplicationError
	if !errors.As(err, &closed) || !closed.Remote {
		t.Fatalf("dial got %v, want the session closed by the listener", err)
	}
}
