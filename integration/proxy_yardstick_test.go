package integration

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"testing"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"golang.org/x/net/http2"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/mem"
	"google.golang.org/grpc/metadata"

	"github.com/postern/postern/pki/pkitest"
)

// The yardsticks of BenchmarkHTTP and BenchmarkGRPC that proxy at layer 7:
// one hop, terminating the client's TLS, built from the libraries alone —
// no tunnel, no policy, no assertion, no recording. They show what one
// hop of each library costs on this machine, against which Postern's two
// hops with everything on can be read.

// yardstickTLS returns a server configuration for name.localhost offering
// protos, and a client configuration that trusts it.
func yardstickTLS(tb testing.TB, name string, protos ...string) (server, client *tls.Config) {
	td := spiffeid.RequireTrustDomainFromString("postern.local")
	ca := pkitest.NewCA(tb, td)
	svid := ca.SVID(tb, spiffeid.RequireFromPath(td, "/yardstick/"+name), pkitest.DNSNames(name+".localhost"))
	return &tls.Config{Certificates: []tls.Certificate{pkitest.TLSCertificate(svid)}, NextProtos: protos},
		&tls.Config{RootCAs: ca.Pool(), ServerName: name + ".localhost", NextProtos: protos}
}

// serveYardstick serves h over TLS on a loopback port until the benchmark
// ends: HTTP/1.1 only, or HTTP/2 with x/net's server (the gateway's).
func serveYardstick(tb testing.TB, conf *tls.Config, h http.Handler, h2 bool) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	srv := &http.Server{Handler: h, TLSConfig: conf}
	if h2 {
		if err := http2.ConfigureServer(srv, &http2.Server{}); err != nil {
			tb.Fatal(err)
		}
	} else {
		srv.TLSNextProto = map[string]func(*http.Server, *tls.Conn, http.Handler){}
	}
	go srv.ServeTLS(ln, "", "")
	tb.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// revproxyHTTP is httputil.ReverseProxy behind net/http's HTTP/1.1 server,
// in front of upstream. It returns its address and a client configuration.
func revproxyHTTP(tb testing.TB, upstream string) (string, *tls.Config) {
	server, client := yardstickTLS(tb, "revproxy", "http/1.1")
	target := &url.URL{Scheme: "http", Host: upstream}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport: &http.Transport{MaxIdleConnsPerHost: benchConns}}
	return serveYardstick(tb, server, proxy, false), client
}

// revproxyGRPC is httputil.ReverseProxy behind x/net's HTTP/2 server, its
// transport x/net's HTTP/2 client (h2c to upstream): Postern's own
// libraries for a gRPC service, one hop.
func revproxyGRPC(tb testing.TB, upstream string) (string, *tls.Config) {
	server, client := yardstickTLS(tb, "revproxy", "h2")
	target := &url.URL{Scheme: "http", Host: upstream}
	proxy := &httputil.ReverseProxy{Rewrite: func(pr *httputil.ProxyRequest) { pr.SetURL(target); pr.SetXForwarded() },
		Transport: &http2.Transport{AllowHTTP: true,
			DialTLSContext: func(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, network, addr)
			}}}
	return serveYardstick(tb, server, proxy, true), client
}

// grpcProxy is a gRPC proxy made of grpc-go alone: a server whose unknown
// service handler opens the same call on a client connection to upstream
// and passes each message on whole, not decoded (rawCodec), with the
// metadata, the trailers and the status.
func grpcProxy(tb testing.TB, upstream string) (string, *tls.Config) {
	server, client := yardstickTLS(tb, "grpcproxy", "h2")
	cc, err := grpc.NewClient("passthrough:///"+upstream, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cc.Close() })
	handler := func(_ any, ss grpc.ServerStream) error {
		method, _ := grpc.MethodFromServerStream(ss)
		md, _ := metadata.FromIncomingContext(ss.Context())
		md = md.Copy()
		for _, k := range []string{":authority", "user-agent", "content-type"} {
			delete(md, k)
		}
		ctx, cancel := context.WithCancel(metadata.NewOutgoingContext(ss.Context(), md))
		defer cancel()
		cs, err := cc.NewStream(ctx, &grpc.StreamDesc{ServerStreams: true, ClientStreams: true}, method, grpc.ForceCodecV2(rawCodec{}))
		if err != nil {
			return err
		}
		go func() {
			for {
				var m rawMessage
				if err := ss.RecvMsg(&m); err != nil {
					cs.CloseSend()
					return
				}
				if cs.SendMsg(&m) != nil {
					return
				}
			}
		}()
		for first := true; ; first = false {
			var m rawMessage
			err := cs.RecvMsg(&m)
			if first {
				if h, err := cs.Header(); err == nil {
					ss.SetHeader(h)
				}
			}
			if err != nil {
				ss.SetTrailer(cs.Trailer())
				if errors.Is(err, io.EOF) {
					return nil
				}
				return err
			}
			if err := ss.SendMsg(&m); err != nil {
				return err
			}
		}
	}
	s := grpc.NewServer(grpc.Creds(credentials.NewTLS(server)), grpc.UnknownServiceHandler(handler), grpc.ForceServerCodecV2(rawCodec{}))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	go s.Serve(ln)
	tb.Cleanup(s.Stop)
	return ln.Addr().String(), client
}

// rawCodec passes a gRPC message's bytes on as they came.
type rawCodec struct{}

type rawMessage struct{ b mem.BufferSlice }

func (rawCodec) Marshal(v any) (mem.BufferSlice, error) { return v.(*rawMessage).b, nil }

func (rawCodec) Unmarshal(data mem.BufferSlice, v any) error {
	data.Ref() // kept until Marshal hands it back to grpc, which frees it
	v.(*rawMessage).b = data
	return nil
}

func (rawCodec) Name() string { return "proto" }
