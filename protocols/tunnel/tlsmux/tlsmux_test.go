package tlsmux_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"

	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
	"github.com/postern/postern/protocols/tunnel/tlsmux"
)

var (
	td        = spiffeid.RequireTrustDomainFromString("postern.local")
	gatewayID = spiffeid.RequireFromPath(td, "/gateway/gw")
	agentID   = spiffeid.RequireFromPath(td, "/agent/a1")
)

// TestServerAfterDemux is the gateway's path: it completes the handshake
// itself on its shared port, looks at ALPN, and only then calls Server.
func TestServerAfterDemux(t *testing.T) {
	tests := map[string]struct {
		clientALPN []string
		wantErr    bool
	}{
		"tunnel ALPN": {clientALPN: []string{tunnel.ALPN}},
		"other ALPN":  {clientALPN: []string{"h2"}, wantErr: true},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			ca := pkitest.NewCA(t, td)
			serverConf := tlsconfig.MTLSServerConfig(ca.SVID(t, gatewayID), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
			serverConf.NextProtos = []string{"h2", tunnel.ALPN} // the shared port speaks both
			clientConf := tlsconfig.MTLSClientConfig(ca.SVID(t, agentID), ca.Bundle(), tlsconfig.AuthorizeID(gatewayID))
			clientConf.NextProtos = tt.clientALPN

			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()

			type result struct {
				s   tunnel.Session
				err error
			}
			served := make(chan result, 1)
			go func() {
				raw, err := ln.Accept()
				if err != nil {
					served <- result{err: err}
					return
				}
				conn := tls.Server(raw, serverConf)
				if err := conn.HandshakeContext(ctx); err != nil { // the demux's handshake
					served <- result{err: err}
					return
				}
				s, err := tlsmux.Server(ctx, conn, nil)
				served <- result{s, err}
			}()

			raw, err := net.Dial("tcp", ln.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			client, err := tlsmux.Client(ctx, tls.Client(raw, clientConf), nil)
			r := <-served
			if tt.wantErr {
				if err == nil || r.err == nil {
					t.Fatalf("got client error %v, server error %v; want both to fail", err, r.err)
				}
				return
			}
			if err != nil || r.err != nil {
				t.Fatalf("got client error %v, server error %v; want none", err, r.err)
			}
			defer client.Close()
			defer r.s.Close()
			if got := r.s.Peer(); got != agentID {
				t.Errorf("server: got peer %v, want %v", got, agentID)
			}
			if got := client.Peer(); got != gatewayID {
				t.Errorf("client: got peer %v, want %v", got, gatewayID)
			}

			st, err := r.s.OpenStream(ctx)
			if err != nil {
				t.Fatalf("OpenStream: %v", err)
			}
			if _, err := st.Write([]byte("hello")); err != nil {
				t.Fatalf("writing: %v", err)
			}
			st.Close()
			in, err := client.AcceptStream(ctx)
			if err != nil {
				t.Fatalf("AcceptStream: %v", err)
			}
			defer in.Close()
			got, err := io.ReadAll(in)
			if err != nil || string(got) != "hello" {
				t.Errorf("got %q, %v, want \"hello\"", got, err)
			}
		})
	}
}

// TestClientTimeout checks that a server that never confirms the session
// makes Client fail once its context ends, instead of hanging.
func TestClientTimeout(t *testing.T) {
	ca := pkitest.NewCA(t, td)
	serverConf := tlsconfig.MTLSServerConfig(ca.SVID(t, gatewayID), ca.Bundle(), tlsconfig.AuthorizeMemberOf(td))
	serverConf.NextProtos = []string{tunnel.ALPN}
	clientConf := tlsconfig.MTLSClientConfig(ca.SVID(t, agentID), ca.Bundle(), tlsconfig.AuthorizeID(gatewayID))
	clientConf.NextProtos = []string{tunnel.ALPN}

	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverConf)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.Copy(io.Discard, c) // handshakes, then says nothing
	}()

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	conn := tls.Client(raw, clientConf)
	if err := conn.HandshakeContext(ctx); err != nil {
		t.Fatalf("handshake: %v", err)
	}
	short, scancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer scancel()
	if s, err := tlsmux.Client(short, conn, nil); err == nil {
		s.Close()
		t.Fatal("got a session from a server that never confirmed it, want an error")
	}
}
