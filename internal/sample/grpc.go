package sample

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// TestServiceName is the full name of the gRPC test service.
const TestServiceName = "grpc.testing.TestService"

// Metadata the gRPC service sends back in every call's response header.
const (
	// AssertionKey is the metadata key of the identity the gateway passes
	// downstream (Postern-Jwt-Assertion).
	AssertionKey = "postern-jwt-assertion"
	// EchoPrefix starts the keys a client may send to see them come back.
	EchoPrefix = "x-echo-"
)

// maxPayload bounds the payloads the test service is asked to make.
const maxPayload = 64 << 20

// NewGRPCServer returns a gRPC server with grpc.testing.TestService, the
// health service (every service SERVING) and server reflection registered.
// Every call on it, whatever the service, copies the incoming metadata key
// postern-jwt-assertion and every x-echo-* key into its response header
// metadata. opts are passed on to grpc.NewServer; interceptors in them run
// after the one that copies metadata.
func NewGRPCServer(opts ...grpc.ServerOption) *grpc.Server {
	opts = append([]grpc.ServerOption{
		grpc.ChainUnaryInterceptor(echoMetadataUnary),
		grpc.ChainStreamInterceptor(echoMetadataStream),
	}, opts...)
	s := grpc.NewServer(opts...)

	hs := health.NewServer()
	hs.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	hs.SetServingStatus(TestServiceName, healthpb.HealthCheckResponse_SERVING)
	healthpb.RegisterHealthServer(s, hs)
	testpb.RegisterTestServiceServer(s, testService{})
	reflection.Register(s)
	return s
}

// ServeGRPC serves NewGRPCServer(opts...) on ln until ctx ends, then stops
// it gracefully (calls still running after 2 seconds are canceled). It
// returns nil after a stop, or the error that stopped the server earlier.
func ServeGRPC(ctx context.Context, ln net.Listener, opts ...grpc.ServerOption) error {
	s := NewGRPCServer(opts...)
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ln) }()

	var err error
	select {
	case err = <-errc:
	case <-ctx.Done():
		t := time.AfterFunc(2*time.Second, s.Stop)
		s.GracefulStop()
		t.Stop()
		err = <-errc
	}
	if err == nil || errors.Is(err, grpc.ErrServerStopped) {
		return nil
	}
	return fmt.Errorf("serving grpc: %w", err)
}

// echoed picks from the incoming metadata the keys sent back.
func echoed(ctx context.Context) metadata.MD {
	in, _ := metadata.FromIncomingContext(ctx)
	out := metadata.MD{}
	for k, v := range in {
		if k == AssertionKey || strings.HasPrefix(k, EchoPrefix) {
			out[k] = append([]string(nil), v...)
		}
	}
	return out
}

func echoMetadataUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
	if md := echoed(ctx); len(md) > 0 {
		if err := grpc.SetHeader(ctx, md); err != nil {
			return nil, err
		}
	}
	return h(ctx, req)
}

func echoMetadataStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
	if md := echoed(ss.Context()); len(md) > 0 {
		if err := ss.SetHeader(md); err != nil {
			return err
		}
	}
	return h(srv, ss)
}

// testService implements grpc.testing.TestService as grpc-go's interop
// server does, with these additions: a requested size of 0 echoes the
// request's payload, intervals and sends end with the call's context, and
// StreamingOutputCall honours response_status after its responses.
type testService struct {
	testpb.UnimplementedTestServiceServer
}

func (testService) EmptyCall(context.Context, *testpb.Empty) (*testpb.Empty, error) {
	return &testpb.Empty{}, nil
}

// UnaryCall answers response_size zero bytes, or the request's payload
// when response_size is 0; a non-OK response_status is returned instead.
func (testService) UnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	if err := statusErr(in.GetResponseStatus()); err != nil {
		return nil, err
	}
	pl, err := payload(in.GetResponseType(), in.GetResponseSize(), in.GetPayload())
	if err != nil {
		return nil, err
	}
	resp := &testpb.SimpleResponse{Payload: pl}
	if in.GetFillServerId() {
		resp.ServerId = "postern-sample"
	}
	return resp, nil
}

// CacheableUnaryCall is UnaryCall.
func (s testService) CacheableUnaryCall(ctx context.Context, in *testpb.SimpleRequest) (*testpb.SimpleResponse, error) {
	return s.UnaryCall(ctx, in)
}

// StreamingOutputCall sends one response per response_parameters entry,
// each after its interval, then returns response_status.
func (testService) StreamingOutputCall(in *testpb.StreamingOutputCallRequest, stream grpc.ServerStreamingServer[testpb.StreamingOutputCallResponse]) error {
	if err := respond(stream.Context(), in, stream.Send); err != nil {
		return err
	}
	return statusErr(in.GetResponseStatus())
}

// StreamingInputCall answers the sum of the request payloads' sizes.
func (testService) StreamingInputCall(stream grpc.ClientStreamingServer[testpb.StreamingInputCallRequest, testpb.StreamingInputCallResponse]) error {
	var sum int64
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			if sum > 1<<31-1 {
				return status.Errorf(codes.OutOfRange, "aggregated payload size %d overflows int32", sum)
			}
			return stream.SendAndClose(&testpb.StreamingInputCallResponse{AggregatedPayloadSize: int32(sum)})
		}
		if err != nil {
			return err
		}
		sum += int64(len(in.GetPayload().GetBody()))
	}
}

// FullDuplexCall answers each request as it comes: a non-OK
// response_status ends the call with it; otherwise one response per
// response_parameters entry, or the request's payload back when there are
// none.
func (testService) FullDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
		if err := statusErr(in.GetResponseStatus()); err != nil {
			return err
		}
		if err := respond(stream.Context(), in, stream.Send); err != nil {
			return err
		}
	}
}

// HalfDuplexCall reads every request, then answers them in order as
// FullDuplexCall does.
func (testService) HalfDuplexCall(stream grpc.BidiStreamingServer[testpb.StreamingOutputCallRequest, testpb.StreamingOutputCallResponse]) error {
	var reqs []*testpb.StreamingOutputCallRequest
	for {
		in, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
		reqs = append(reqs, in)
	}
	for _, in := range reqs {
		if err := statusErr(in.GetResponseStatus()); err != nil {
			return err
		}
		if err := respond(stream.Context(), in, stream.Send); err != nil {
			return err
		}
	}
	return nil
}

// respond sends the responses in asks for: one per response parameter
// after its interval, or in's payload back when it has none.
func respond(ctx context.Context, in *testpb.StreamingOutputCallRequest, send func(*testpb.StreamingOutputCallResponse) error) error {
	params := in.GetResponseParameters()
	if len(params) == 0 {
		params = []*testpb.ResponseParameters{{}}
	}
	for _, p := range params {
		if us := p.GetIntervalUs(); us > 0 && !sleep(ctx, time.Duration(us)*time.Microsecond) {
			return status.FromContextError(ctx.Err()).Err()
		}
		pl, err := payload(in.GetResponseType(), p.GetSize(), in.GetPayload())
		if err != nil {
			return err
		}
		if err := send(&testpb.StreamingOutputCallResponse{Payload: pl}); err != nil {
			return err
		}
	}
	return nil
}

// payload makes a response payload of size zero bytes, or a copy of req
// when size is 0.
func payload(t testpb.PayloadType, size int32, req *testpb.Payload) (*testpb.Payload, error) {
	switch {
	case size < 0 || size > maxPayload:
		return nil, status.Errorf(codes.InvalidArgument, "response size %d: want 0 to %d", size, maxPayload)
	case size == 0:
		return &testpb.Payload{Type: t, Body: append([]byte(nil), req.GetBody()...)}, nil
	default:
		return &testpb.Payload{Type: t, Body: make([]byte, size)}, nil
	}
}

// statusErr is the error for a requested status, nil for none or OK.
func statusErr(st *testpb.EchoStatus) error {
	if st.GetCode() == 0 {
		return nil
	}
	return status.Error(codes.Code(st.GetCode()), st.GetMessage())
}
