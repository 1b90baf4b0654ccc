package tunnel_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/postern/postern/pki/pkitest"
	"github.com/postern/postern/protocols/tunnel"
)

// TestConformance runs one suite against every transport: whatever the agent
// and the gateway rely on must hold for QUIC and for TLS + yamux alike.
func TestConformance(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Run("Peer", func(t *testing.T) { testPeer(t, tr) })
			t.Run("Refused", func(t *testing.T) { testRefused(t, tr) })
			t.Run("ConcurrentStreams", func(t *testing.T) { testConcurrentStreams(t, tr) })
			t.Run("BigTransfer", func(t *testing.T) { testBigTransfer(t, tr) })
			t.Run("HalfClose", func(t *testing.T) { testHalfClose(t, tr) })
			t.Run("Close", func(t *testing.T) { testClose(t, tr) })
			t.Run("Deadline", func(t *testing.T) { testDeadline(t, tr) })
			t.Run("HeaderReply", func(t *testing.T) { testHeaderReply(t, tr) })
			t.Run("UnsupportedVersion", func(t *testing.T) { testUnsupportedVersion(t, tr) })
			t.Run("Control", func(t *testing.T) { testControl(t, tr) })
			t.Run("MaxStreams", func(t *testing.T) { testMaxStreams(t, tr) })
			t.Run("SessionClose", func(t *testing.T) { testSessionClose(t, tr) })
			t.Run("ListenerClose", func(t *testing.T) { testListenerClose(t, tr) })
			// These two mostly wait; they run side by side.
			t.Run("PeerDeath", func(t *testing.T) { t.Parallel(); testPeerDeath(t, tr) })
			t.Run("KeepAlive", func(t *testing.T) { t.Parallel(); testKeepAlive(t, tr) })
		})
	}
}

// shortLived makes dead peers visible quickly.
var shortLived = &tunnel.Config{KeepAlive: 500 * time.Millisecond, IdleTimeout: 2 * time.Second}

func testPeer(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	if got := client.Peer(); got != gatewayID {
		t.Errorf("client: got peer %v, want %v", got, gatewayID)
	}
	if got := server.Peer(); got != agentID {
		t.Errorf("server: got peer %v, want %v", got, agentID)
	}
	for side, s := range map[string]tunnel.Session{"client": client, "server": server} {
		if got := s.Transport(); got != tr.name {
			t.Errorf("%s: got transport %q, want %q", side, got, tr.name)
		}
		if a := s.RemoteAddr(); a == nil || a.String() == "" {
			t.Errorf("%s: got remote address %v, want one", side, a)
		}
		if isClosed(s.Done()) {
			t.Errorf("%s: Done is closed on a live session", side)
		}
	}
}

func testRefused(t *testing.T, tr transport) {
	f := newFixture(t)
	ln := listen(t, tr, f, nil)
	other := spiffeid.RequireTrustDomainFromString("other.test")

	tests := map[string]struct {
		client func(t *testing.T) *x509svid.SVID // the agent's SVID
		server *x509svid.SVID                    // the gateway's SVID; nil: the good one
	}{
		"other trust domain": {client: func(t *testing.T) *x509svid.SVID {
			return pkitest.NewCA(t, other).SVID(t, spiffeid.RequireFromPath(other, "/agent/a1"))
		}},
		"other CA": {client: func(t *testing.T) *x509svid.SVID {
			return pkitest.NewCA(t, td).SVID(t, agentID)
		}},
		"expired": {client: func(t *testing.T) *x509svid.SVID {
			return f.ca.SVID(t, agentID, pkitest.Expired())
		}},
		"not yet valid": {client: func(t *testing.T) *x509svid.SVID {
			return f.ca.SVID(t, agentID, pkitest.Valid(time.Now().Add(time.Hour), time.Now().Add(2*time.Hour)))
		}},
		"user, not agent": {client: func(t *testing.T) *x509svid.SVID {
			return f.ca.SVID(t, spiffeid.RequireFromPath(td, "/user/alice"))
		}},
		"server not a gateway": {
			client: func(t *testing.T) *x509svid.SVID { return f.agent },
			server: f.ca.SVID(t, spiffeid.RequireFromPath(td, "/agent/impostor")),
		},
	}
	for name, tt := range tests {
		t.Run(name, func(t *testing.T) {
			l := ln
			if tt.server != nil {
				var err error
				l, err = tr.listen("127.0.0.1:0", serverTLS(tt.server, f.ca.Bundle()), testConfig(nil))
				if err != nil {
					t.Fatalf("listening: %v", err)
				}
				defer l.Close()
			}
			ctx, cancel := context.WithTimeout(context.Background(), setupTimeout)
			defer cancel()
			s, err := tr.dial(ctx, l.Addr().String(), clientTLS(tt.client(t), f.ca.Bundle()), testConfig(nil))
			if err == nil {
				s.Close()
				t.Fatalf("got a session with peer %v, want the handshake refused", s.Peer())
			}
			t.Logf("refused: %v", err)

			actx, acancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer acancel()
			if s, err := l.Accept(actx); err == nil {
				s.Close()
				t.Errorf("listener: got a session with peer %v, want none", s.Peer())
			}
		})
	}

	// The listener still serves good agents.
	connect(t, tr, f, ln, ln.Addr().String(), nil)
}

func testConcurrentStreams(t *testing.T, tr transport) {
	const streams = 200
	client, server := pair(t, tr, nil)
	serve(t, server, echo)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for i := range streams {
		wg.Go(func() {
			if err := roundTrip(ctx, client, 1+rand.IntN(64<<10)); err != nil {
				t.Errorf("stream %d: %v", i, err)
			}
		})
	}
	wg.Wait()
}

// roundTrip sends n random bytes on a new stream, reads the echo and compares
// checksums.
func roundTrip(ctx context.Context, s tunnel.Session, n int) error {
	st, err := s.OpenStream(ctx)
	if err != nil {
		return err
	}
	defer st.Close()
	if d, ok := ctx.Deadline(); ok {
		_ = st.SetDeadline(d)
	}
	data := make([]byte, n)
	rand.NewChaCha8([32]byte{byte(n)}).Read(data)
	werr := make(chan error, 1)
	go func() {
		_, err := st.Write(data)
		if err == nil {
			err = st.(tunnel.CloseWriter).CloseWrite()
		}
		werr <- err
	}()
	got, err := io.ReadAll(st)
	if err != nil {
		return fmt.Errorf("reading echo: %w", err)
	}
	if err := <-werr; err != nil {
		return fmt.Errorf("writing: %w", err)
	}
	if sha256.Sum256(got) != sha256.Sum256(data) {
		return fmt.Errorf("got %d bytes back with another checksum, sent %d", len(got), n)
	}
	return nil
}

func testBigTransfer(t *testing.T, tr transport) {
	size := int64(1 << 30)
	if testing.Short() {
		size = 64 << 20
	}
	client, server := pair(t, tr, nil)
	serve(t, server, func(st net.Conn) {
		h := sha256.New()
		n, err := io.CopyBuffer(h, onlyReader{st}, make([]byte, 256<<10))
		if err != nil {
			t.Errorf("server: reading: %v", err)
			return
		}
		reply := binary.BigEndian.AppendUint64(h.Sum(nil), uint64(n))
		if _, err := st.Write(reply); err != nil {
			t.Errorf("server: writing digest: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	h := sha256.New()
	src := io.LimitReader(rand.NewChaCha8([32]byte{1}), size)
	start := time.Now()
	n, err := io.CopyBuffer(io.MultiWriter(st, h), src, make([]byte, 256<<10))
	if err != nil {
		t.Fatalf("writing: %v", err)
	}
	if err := st.(tunnel.CloseWriter).CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	reply, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading digest: %v", err)
	}
	elapsed := time.Since(start)
	if len(reply) != sha256.Size+8 {
		t.Fatalf("got a reply of %d bytes, want %d", len(reply), sha256.Size+8)
	}
	if got := int64(binary.BigEndian.Uint64(reply[sha256.Size:])); got != n || n != size {
		t.Errorf("server got %d bytes, client sent %d, want %d", got, n, size)
	}
	if !bytes.Equal(reply[:sha256.Size], h.Sum(nil)) {
		t.Errorf("got server digest %x, want %x", reply[:sha256.Size], h.Sum(nil))
	}
	t.Logf("%d MiB in %v (%.0f MB/s)", size>>20, elapsed.Round(time.Millisecond), float64(size)/elapsed.Seconds()/1e6)
}

func testHalfClose(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	request := bytes.Repeat([]byte("request "), 10<<10)
	reply := bytes.Repeat([]byte("reply "), 200<<10)
	serve(t, server, func(st net.Conn) {
		got, err := io.ReadAll(st)
		if err != nil {
			t.Errorf("server: reading: %v", err)
			return
		}
		if !bytes.Equal(got, request) {
			t.Errorf("server: got %d bytes, want the %d-byte request", len(got), len(request))
		}
		// The client's write side is closed; ours is still open.
		if _, err := st.Write(reply); err != nil {
			t.Errorf("server: writing after the client's CloseWrite: %v", err)
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	cw, ok := st.(tunnel.CloseWriter)
	if !ok {
		t.Fatalf("stream %T does not implement CloseWriter", st)
	}
	if _, err := st.Write(request); err != nil {
		t.Fatalf("writing: %v", err)
	}
	if err := cw.CloseWrite(); err != nil {
		t.Fatalf("CloseWrite: %v", err)
	}
	if _, err := st.Write([]byte("late")); err == nil {
		t.Errorf("Write after CloseWrite: got no error, want one")
	}
	got, err := io.ReadAll(st)
	if err != nil {
		t.Fatalf("reading the reply: %v", err)
	}
	if !bytes.Equal(got, reply) {
		t.Errorf("got %d bytes, want the %d-byte reply", len(got), len(reply))
	}
}

func testClose(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	peer, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	defer peer.Close()
	if _, err := io.ReadFull(peer, make([]byte, 1)); err != nil {
		t.Fatalf("peer: reading: %v", err)
	}

	// A Read blocked when Close is called returns.
	readErr := make(chan error, 1)
	go func() {
		_, err := st.Read(make([]byte, 1))
		readErr <- err
	}()
	time.Sleep(50 * time.Millisecond) // let the Read block; the test holds without it
	if err := st.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	select {
	case err := <-readErr:
		if err == nil || errors.Is(err, io.EOF) {
			t.Errorf("blocked Read: got %v, want an error other than EOF", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("blocked Read: still blocked after Close")
	}

	if _, err := st.Read(make([]byte, 1)); err == nil || errors.Is(err, io.EOF) {
		t.Errorf("Read after Close: got %v, want an error other than EOF", err)
	}
	if _, err := st.Write([]byte("y")); err == nil {
		t.Errorf("Write after Close: got no error, want one")
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: got %v, want nil", err)
	}
	_ = peer.SetReadDeadline(time.Now().Add(10 * time.Second))
	if n, err := peer.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Errorf("peer: got %d, %v after Close, want io.EOF", n, err)
	}
}

func testDeadline(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	if a, b := st.LocalAddr(), st.RemoteAddr(); a == nil || b == nil {
		t.Errorf("got addresses %v, %v, want both", a, b)
	}
	if _, err := st.Write([]byte("x")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	peer, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("AcceptStream: %v", err)
	}
	defer peer.Close()

	_ = st.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, err = st.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("got %v, want a timeout matching os.ErrDeadlineExceeded", err)
	}

	// The stream still works once the deadline is lifted.
	_ = st.SetReadDeadline(time.Time{})
	if _, err := peer.Write([]byte("y")); err != nil {
		t.Fatalf("peer: writing: %v", err)
	}
	b := make([]byte, 1)
	if _, err := io.ReadFull(st, b); err != nil || b[0] != 'y' {
		t.Fatalf("got %q, %v, want \"y\"", b, err)
	}
}

func testHeaderReply(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	want := tunnel.Header{
		Kind:     tunnel.KindData,
		Service:  "orders-db",
		Session:  "s-1",
		Identity: "spiffe://postern.local/user/alice",
		Groups:   []string{"dba"},
		Source:   "127.0.0.1:40000",
		Params:   map[string]string{"user": "app"},
	}
	serve(t, server, func(st net.Conn) {
		h, err := tunnel.ReadHeader(st)
		if err != nil {
			t.Errorf("server: ReadHeader: %v", err)
			return
		}
		if !reflect.DeepEqual(h, want) {
			t.Errorf("server: got header %+v, want %+v", h, want)
		}
		if h.Service != want.Service {
			_ = tunnel.WriteReply(st, tunnel.Reply{Error: "no such service"})
			return
		}
		if err := tunnel.WriteReply(st, tunnel.Reply{OK: true}); err != nil {
			t.Errorf("server: WriteReply: %v", err)
			return
		}
		echo(st)
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	if err := tunnel.WriteHeader(st, want); err != nil {
		t.Fatalf("WriteHeader: %v", err)
	}
	// Data right behind the header must not be swallowed by ReadHeader.
	if _, err := st.Write([]byte("payload")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	_ = st.(tunnel.CloseWriter).CloseWrite()
	r, err := tunnel.ReadReply(st)
	if err != nil {
		t.Fatalf("ReadReply: %v", err)
	}
	if !r.OK {
		t.Fatalf("got reply %+v, want OK", r)
	}
	got, err := io.ReadAll(st)
	if err != nil || string(got) != "payload" {
		t.Errorf("got %q, %v after the reply, want \"payload\"", got, err)
	}
}

func testUnsupportedVersion(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	serve(t, server, func(st net.Conn) {
		_, err := tunnel.ReadHeader(st)
		if !errors.Is(err, tunnel.ErrUnsupportedVersion) {
			t.Errorf("server: got %v, want ErrUnsupportedVersion", err)
		}
		_ = tunnel.WriteReply(st, tunnel.Reply{Error: err.Error()})
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	if _, err := st.Write([]byte("PT\x02\x02\x00\x00\x00\x02{}")); err != nil {
		t.Fatalf("writing: %v", err)
	}
	r, err := tunnel.ReadReply(st)
	if err != nil {
		t.Fatalf("ReadReply: %v", err)
	}
	if r.OK || r.Error == "" {
		t.Errorf("got reply %+v, want an error", r)
	}
}

func testControl(t *testing.T, tr transport) {
	const pings = 20
	client, server := pair(t, tr, nil)
	announce := tunnel.Message{Type: tunnel.TypeAnnounce, Agent: "a1", Services: []tunnel.Service{{Name: "db", Protocol: "postgres"}}}

	received := make(chan tunnel.Message, pings+1)
	serve(t, server, func(st net.Conn) {
		h, err := tunnel.ReadHeader(st)
		if err != nil || h.Kind != tunnel.KindControl {
			t.Errorf("server: got header %+v, %v, want a control header", h, err)
			return
		}
		c := tunnel.NewControl(st)
		for {
			m, err := c.Receive()
			if errors.Is(err, io.EOF) {
				close(received)
				return
			}
			if err != nil {
				t.Errorf("server: Receive: %v", err)
				return
			}
			received <- m
			if m.Type == tunnel.TypePing {
				if err := c.Send(tunnel.Message{Type: tunnel.TypePong, Seq: m.Seq}); err != nil {
					t.Errorf("server: Send: %v", err)
				}
			}
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := client.OpenStream(ctx)
	if err != nil {
		t.Fatalf("OpenStream: %v", err)
	}
	defer st.Close()
	if err := tunnel.WriteHeader(st, tunnel.Header{Kind: tunnel.KindControl}); err != nil {
		t.Fatalf("WriteHeader: %v", err)
	}
	c := tunnel.NewControl(st)
	if err := c.Send(announce); err != nil {
		t.Fatalf("Send: %v", err)
	}
	var wg sync.WaitGroup
	for i := range pings {
		wg.Go(func() {
			if err := c.Send(tunnel.Message{Type: tunnel.TypePing, Seq: uint64(i + 1)}); err != nil {
				t.Errorf("Send: %v", err)
			}
		})
	}
	wg.Wait()
	pongs := make(map[uint64]bool)
	for range pings {
		m, err := c.Receive()
		if err != nil {
			t.Fatalf("Receive: %v", err)
		}
		if m.Type != tunnel.TypePong {
			t.Fatalf("got %+v, want a pong", m)
		}
		pongs[m.Seq] = true
	}
	if len(pongs) != pings {
		t.Errorf("got %d distinct pongs, want %d", len(pongs), pings)
	}
	_ = st.(tunnel.CloseWriter).CloseWrite()

	first := true
	n := 0
	for m := range received {
		if first && !reflect.DeepEqual(m, announce) {
			t.Errorf("server: got first message %+v, want %+v", m, announce)
		}
		first = false
		n++
	}
	if n != pings+1 {
		t.Errorf("server: got %d messages, want %d", n, pings+1)
	}
}

func testMaxStreams(t *testing.T, tr transport) {
	f := newFixture(t)
	ln := listen(t, tr, f, &tunnel.Config{MaxStreams: 2})
	client, server := connect(t, tr, f, ln, ln.Addr().String(), nil)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	for range 3 {
		wg.Go(func() {
			st, err := client.OpenStream(ctx)
			if err != nil {
				t.Errorf("OpenStream: %v", err)
				return
			}
			defer st.Close()
			if _, err := st.Write([]byte("h")); err != nil {
				t.Errorf("writing: %v", err)
				return
			}
			_, _ = io.Copy(io.Discard, st) // until the server closes
		})
	}
	var open []net.Conn
	for range 2 {
		st, err := server.AcceptStream(ctx)
		if err != nil {
			t.Fatalf("AcceptStream: %v", err)
		}
		open = append(open, st)
	}
	short, scancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer scancel()
	if st, err := server.AcceptStream(short); err == nil {
		st.Close()
		t.Fatalf("got a third stream while two are open, want none (MaxStreams 2)")
	}
	open[0].Close()
	st, err := server.AcceptStream(ctx)
	if err != nil {
		t.Fatalf("AcceptStream after a stream closed: %v", err)
	}
	st.Close()
	open[1].Close()
}

func testSessionClose(t *testing.T, tr transport) {
	client, server := pair(t, tr, nil)
	if err := server.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, server.Done(), 5*time.Second, "server Done")
	waitClosed(t, client.Done(), 10*time.Second, "client Done")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if st, err := client.OpenStream(ctx); err == nil {
		st.Close()
		t.Errorf("OpenStream on a closed session: got a stream, want an error")
	}
	if _, err := client.AcceptStream(ctx); err == nil {
		t.Errorf("AcceptStream on a closed session: got a stream, want an error")
	}
	if _, err := server.OpenStream(ctx); err == nil {
		t.Errorf("OpenStream after Close: got a stream, want an error")
	}
}

func testListenerClose(t *testing.T, tr transport) {
	f := newFixture(t)
	ln := listen(t, tr, f, nil)
	client, server := connect(t, tr, f, ln, ln.Addr().String(), nil)
	if err := ln.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	waitClosed(t, server.Done(), 5*time.Second, "server Done")
	waitClosed(t, client.Done(), 10*time.Second, "client Done")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ln.Accept(ctx); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Accept after Close: got %v, want net.ErrClosed", err)
	}
}

func testPeerDeath(t *testing.T, tr transport) {
	f := newFixture(t)
	ln := listen(t, tr, f, shortLived)
	r := newRelay(t, tr.network, ln.Addr().String())
	client, server := connect(t, tr, f, ln, r.Addr().String(), shortLived)
	serve(t, server, echo)

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := roundTrip(ctx, client, 1000); err != nil {
		t.Fatalf("before: %v", err)
	}
	r.blackhole()
	// Dead within about IdleTimeout; the bound here is generous on purpose.
	waitClosed(t, client.Done(), 10*shortLived.IdleTimeout, "client Done after the peer died")
	waitClosed(t, server.Done(), 10*shortLived.IdleTimeout, "server Done after the peer died")
	octx, ocancel := context.WithTimeout(ctx, 2*time.Second)
	defer ocancel()
	if st, err := client.OpenStream(octx); err == nil {
		st.Close()
		t.Errorf("OpenStream on a dead session: got a stream, want an error")
	}
}

func testKeepAlive(t *testing.T, tr transport) {
	client, server := pair(t, tr, shortLived)
	serve(t, server, echo)
	time.Sleep(3 * shortLived.IdleTimeout)
	if isClosed(client.Done()) || isClosed(server.Done()) {
		t.Fatalf("an idle session died (client %v, server %v) despite keepalives", isClosed(client.Done()), isClosed(server.Done()))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := roundTrip(ctx, client, 1000); err != nil {
		t.Fatalf("after idling: %v", err)
	}
}

// TestNoGoroutineLeak checks that closed sessions, streams and listeners
// leave no goroutines behind.
func TestNoGoroutineLeak(t *testing.T) {
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			round := func() {
				t.Run("round", func(t *testing.T) {
					client, server := pair(t, tr, nil)
					serve(t, server, echo)
					ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
					defer cancel()
					for range 10 {
						if err := roundTrip(ctx, client, 10000); err != nil {
							t.Fatal(err)
						}
					}
				})
			}
			round() // warms up whatever the libraries start once
			before := runtime.NumGoroutine()
			round()
			deadline := time.Now().Add(10 * time.Second)
			for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
				time.Sleep(20 * time.Millisecond)
			}
			if after := runtime.NumGoroutine(); after > before {
				buf := make([]byte, 1<<20)
				t.Errorf("got %d goroutines, want at most %d:\n%s", after, before, buf[:runtime.Stack(buf, true)])
			}
		})
	}
}
