package sample

import (
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	testpb "google.golang.org/grpc/interop/grpc_testing"
	"google.golang.org/grpc/metadata"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"
	"google.golang.org/grpc/status"
)

// startGRPC serves the sample gRPC service on a loopback port until the
// test ends and returns a client connection to it.
func startGRPC(t *testing.T) *grpc.ClientConn {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeGRPC(ctx, ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cc.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("ServeGRPC: got %v, want nil", err)
		}
	})
	return cc
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func wantCode(t *testing.T, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("code: got %v (%v), want %v", got, err, want)
	}
}

func TestHealth(t *testing.T) {
	hc := healthpb.NewHealthClient(startGRPC(t))
	tests := map[string]struct {
		service    string
		wantCode   codes.Code
		wantStatus healthpb.HealthCheckResponse_ServingStatus
	}{
		"server":       {"", codes.OK, healthpb.HealthCheckResponse_SERVING},
		"test service": {TestServiceName, codes.OK, healthpb.HealthCheckResponse_SERVING},
		"unknown":      {"no.Such", codes.NotFound, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := hc.Check(testCtx(t), &healthpb.HealthCheckRequest{Service: tc.service})
			wantCode(t, err, tc.wantCode)
			if got := resp.GetStatus(); err == nil && got != tc.wantStatus {
				t.Errorf("status: got %v, want %v", got, tc.wantStatus)
			}
		})
	}
}

func TestReflection(t *testing.T) {
	rc := reflectionpb.NewServerReflectionClient(startGRPC(t))
	stream, err := rc.ServerReflectionInfo(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&reflectionpb.ServerReflectionRequest{
		MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	stream.CloseSend()
	var got []string
	for _, s := range resp.GetListServicesResponse().GetService() {
		got = append(got, s.GetName())
	}
	for _, want := range []string{TestServiceName, "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"} {
		if !slices.Contains(got, want) {
			t.Errorf("services: got %q, want %s among them", got, want)
		}
	}
}

func TestEmptyCall(t *testing.T) {
	tc := testpb.NewTestServiceClient(startGRPC(t))
	if _, err := tc.EmptyCall(testCtx(t), &testpb.Empty{}); err != nil {
		t.Errorf("EmptyCall: got %v, want nil", err)
	}
}

func TestUnaryCall(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	tests := map[string]struct {
		req      *testpb.SimpleRequest
		wantCode codes.Code
		wantMsg  string
		wantBody []byte
	}{
		"size":          {req: &testpb.SimpleRequest{ResponseSize: 10}, wantBody: make([]byte, 10)},
		"echo payload":  {req: &testpb.SimpleRequest{Payload: &testpb.Payload{Body: []byte("hello")}}, wantBody: []byte("hello")},
		"empty":         {req: &testpb.SimpleRequest{}, wantBody: nil},
		"1 MiB":         {req: &testpb.SimpleRequest{ResponseSize: 1 << 20}, wantBody: make([]byte, 1<<20)},
		"status":        {req: &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.PermissionDenied), Message: "nope"}}, wantCode: codes.PermissionDenied, wantMsg: "nope"},
		"status OK":     {req: &testpb.SimpleRequest{ResponseSize: 1, ResponseStatus: &testpb.EchoStatus{}}, wantBody: []byte{0}},
		"negative size": {req: &testpb.SimpleRequest{ResponseSize: -1}, wantCode: codes.InvalidArgument},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			resp, err := client.UnaryCall(testCtx(t), tc.req)
			wantCode(t, err, tc.wantCode)
			if err != nil {
				if tc.wantMsg != "" && status.Convert(err).Message() != tc.wantMsg {
					t.Errorf("message: got %q, want %q", status.Convert(err).Message(), tc.wantMsg)
				}
				return
			}
			if got := resp.GetPayload().GetBody(); string(got) != string(tc.wantBody) {
				t.Errorf("body: got %d bytes %q..., want %d bytes", len(got), got[:min(len(got), 8)], len(tc.wantBody))
			}
		})
	}
}

func recvAll(stream interface {
	Recv() (*testpb.StreamingOutputCallResponse, error)
}) ([]int, error) {
	var sizes []int
	for {
		resp, err := stream.Recv()
		if err == io.EOF {
			return sizes, nil
		}
		if err != nil {
			return sizes, err
		}
		sizes = append(sizes, len(resp.GetPayload().GetBody()))
	}
}

func params(sizes ...int32) []*testpb.ResponseParameters {
	var ps []*testpb.ResponseParameters
	for _, s := range sizes {
		ps = append(ps, &testpb.ResponseParameters{Size: s})
	}
	return ps
}

func TestStreamingOutputCall(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	tests := map[string]struct {
		req       *testpb.StreamingOutputCallRequest
		timeout   time.Duration
		wantSizes []int
		wantCode  codes.Code
	}{
		"sizes": {req: &testpb.StreamingOutputCallRequest{ResponseParameters: params(1, 2, 3, 1<<16)}, wantSizes: []int{1, 2, 3, 1 << 16}},
		"echo": {
			req:       &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("abc")}},
			wantSizes: []int{3},
		},
		"interval": {
			req: &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{
				{Size: 1, IntervalUs: 10_000}, {Size: 2, IntervalUs: 10_000},
			}},
			wantSizes: []int{1, 2},
		},
		"status after responses": {
			req: &testpb.StreamingOutputCallRequest{
				ResponseParameters: params(5, 6),
				ResponseStatus:     &testpb.EchoStatus{Code: int32(codes.Unavailable), Message: "gone"},
			},
			wantSizes: []int{5, 6},
			wantCode:  codes.Unavailable,
		},
		"deadline during interval": {
			req: &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{
				{Size: 1}, {Size: 2, IntervalUs: 30_000_000},
			}},
			timeout:   300 * time.Millisecond,
			wantSizes: []int{1},
			wantCode:  codes.DeadlineExceeded,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx := testCtx(t)
			if tc.timeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.timeout)
				defer cancel()
			}
			stream, err := client.StreamingOutputCall(ctx, tc.req)
			if err != nil {
				t.Fatal(err)
			}
			sizes, err := recvAll(stream)
			wantCode(t, err, tc.wantCode)
			if !slices.Equal(sizes, tc.wantSizes) {
				t.Errorf("sizes: got %v, want %v", sizes, tc.wantSizes)
			}
		})
	}
}

func TestStreamingInputCall(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	tests := map[string]struct {
		sizes []int
		want  int32
	}{
		"none":    {nil, 0},
		"one":     {[]int{7}, 7},
		"several": {[]int{1, 10, 100, 1 << 20}, 1 + 10 + 100 + 1<<20},
		"empties": {[]int{0, 0}, 0},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			stream, err := client.StreamingInputCall(testCtx(t))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range tc.sizes {
				if err := stream.Send(&testpb.StreamingInputCallRequest{Payload: &testpb.Payload{Body: make([]byte, n)}}); err != nil {
					t.Fatal(err)
				}
			}
			resp, err := stream.CloseAndRecv()
			if err != nil {
				t.Fatal(err)
			}
			if got := resp.GetAggregatedPayloadSize(); got != tc.want {
				t.Errorf("aggregated size: got %d, want %d", got, tc.want)
			}
		})
	}
}

// TestFullDuplexCall: each request is answered before the next is sent.
func TestFullDuplexCall(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	stream, err := client.FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	steps := map[string]struct {
		req       *testpb.StreamingOutputCallRequest
		wantSizes []int
		wantBody  string
	}{
		"echo":   {req: &testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("ping")}}, wantSizes: []int{4}, wantBody: "ping"},
		"sizes":  {req: &testpb.StreamingOutputCallRequest{ResponseParameters: params(3, 4)}, wantSizes: []int{3, 4}},
		"single": {req: &testpb.StreamingOutputCallRequest{ResponseParameters: params(100)}, wantSizes: []int{100}},
	}
	for _, name := range []string{"echo", "sizes", "single"} {
		tc := steps[name]
		t.Run(name, func(t *testing.T) {
			if err := stream.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			for i, want := range tc.wantSizes {
				resp, err := stream.Recv()
				if err != nil {
					t.Fatalf("response %d: %v", i, err)
				}
				body := resp.GetPayload().GetBody()
				if len(body) != want {
					t.Errorf("response %d: got %d bytes, want %d", i, len(body), want)
				}
				if tc.wantBody != "" && string(body) != tc.wantBody {
					t.Errorf("response %d: got %q, want %q", i, body, tc.wantBody)
				}
			}
		})
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != io.EOF {
		t.Errorf("after CloseSend: got %v, want io.EOF", err)
	}
}

func TestFullDuplexCallEnds(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	tests := map[string]struct {
		req      *testpb.StreamingOutputCallRequest
		cancel   bool
		wantCode codes.Code
	}{
		"status": {
			req:      &testpb.StreamingOutputCallRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.ResourceExhausted), Message: "full"}},
			wantCode: codes.ResourceExhausted,
		},
		"canceled during interval": {
			req:      &testpb.StreamingOutputCallRequest{ResponseParameters: []*testpb.ResponseParameters{{Size: 1, IntervalUs: 30_000_000}}},
			cancel:   true,
			wantCode: codes.Canceled,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(testCtx(t))
			defer cancel()
			stream, err := client.FullDuplexCall(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if err := stream.Send(tc.req); err != nil {
				t.Fatal(err)
			}
			if tc.cancel {
				time.AfterFunc(100*time.Millisecond, cancel)
			}
			_, err = stream.Recv()
			wantCode(t, err, tc.wantCode)
		})
	}
}

func TestHalfDuplexCall(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	stream, err := client.HalfDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	reqs := []*testpb.StreamingOutputCallRequest{
		{ResponseParameters: params(1, 2)},
		{Payload: &testpb.Payload{Body: []byte("xyz")}},
		{ResponseParameters: params(4)},
	}
	for _, r := range reqs {
		if err := stream.Send(r); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	sizes, err := recvAll(stream)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{1, 2, 3, 4}; !slices.Equal(sizes, want) {
		t.Errorf("sizes: got %v, want %v", sizes, want)
	}
}

// TestMetadataEcho: every kind of call, on every service, sends back
// postern-jwt-assertion and the x-echo-* keys in its response header, and
// no other incoming key.
func TestMetadataEcho(t *testing.T) {
	cc := startGRPC(t)
	client := testpb.NewTestServiceClient(cc)
	calls := map[string]func(ctx context.Context) (metadata.MD, error){
		"unary": func(ctx context.Context) (metadata.MD, error) {
			var h metadata.MD
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseSize: 1}, grpc.Header(&h))
			return h, err
		},
		"unary refused": func(ctx context.Context) (metadata.MD, error) {
			var h metadata.MD
			_, err := client.UnaryCall(ctx, &testpb.SimpleRequest{ResponseStatus: &testpb.EchoStatus{Code: int32(codes.Aborted)}}, grpc.Header(&h))
			if status.Code(err) == codes.Aborted {
				err = nil
			}
			return h, err
		},
		"empty": func(ctx context.Context) (metadata.MD, error) {
			var h metadata.MD
			_, err := client.EmptyCall(ctx, &testpb.Empty{}, grpc.Header(&h))
			return h, err
		},
		"server streaming": func(ctx context.Context) (metadata.MD, error) {
			s, err := client.StreamingOutputCall(ctx, &testpb.StreamingOutputCallRequest{ResponseParameters: params(1)})
			if err != nil {
				return nil, err
			}
			if _, err := recvAll(s); err != nil {
				return nil, err
			}
			return s.Header()
		},
		"client streaming": func(ctx context.Context) (metadata.MD, error) {
			s, err := client.StreamingInputCall(ctx)
			if err != nil {
				return nil, err
			}
			if _, err := s.CloseAndRecv(); err != nil {
				return nil, err
			}
			return s.Header()
		},
		"bidi": func(ctx context.Context) (metadata.MD, error) {
			s, err := client.FullDuplexCall(ctx)
			if err != nil {
				return nil, err
			}
			s.CloseSend()
			if _, err := s.Recv(); err != io.EOF {
				return nil, errors.Join(errors.New("want io.EOF"), err)
			}
			return s.Header()
		},
		"health": func(ctx context.Context) (metadata.MD, error) {
			var h metadata.MD
			_, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{}, grpc.Header(&h))
			return h, err
		},
	}
	for name, call := range calls {
		t.Run(name, func(t *testing.T) {
			ctx := metadata.AppendToOutgoingContext(testCtx(t),
				"postern-jwt-assertion", "eyJ.payload.sig",
				"x-echo-one", "1",
				"x-echo-many", "a", "x-echo-many", "b",
				"x-echo-data-bin", "\x00\x01",
				"x-other", "not echoed",
			)
			h, err := call(ctx)
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{
				"postern-jwt-assertion": {"eyJ.payload.sig"},
				"x-echo-one":            {"1"},
				"x-echo-many":           {"a", "b"},
				"x-echo-data-bin":       {"\x00\x01"},
				"x-other":               nil,
			}
			for k, v := range want {
				if got := h.Get(k); !slices.Equal(got, v) {
					t.Errorf("header %s: got %q, want %q", k, got, v)
				}
			}
		})
	}
}

// TestMetadataEchoNone: without those keys, nothing extra comes back.
func TestMetadataEchoNone(t *testing.T) {
	client := testpb.NewTestServiceClient(startGRPC(t))
	var h metadata.MD
	if _, err := client.EmptyCall(testCtx(t), &testpb.Empty{}, grpc.Header(&h)); err != nil {
		t.Fatal(err)
	}
	for k := range h {
		if k == AssertionKey || len(k) > len(EchoPrefix) && k[:len(EchoPrefix)] == EchoPrefix {
			t.Errorf("header: got %s, want no echoed keys", k)
		}
	}
}

// TestServeGRPCStops: ending ctx stops the server, ending a call in
// flight, and ServeGRPC returns nil.
func TestServeGRPCStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- ServeGRPC(ctx, ln) }()
	cc, err := grpc.NewClient(ln.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	stream, err := testpb.NewTestServiceClient(cc).FullDuplexCall(testCtx(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&testpb.StreamingOutputCallRequest{Payload: &testpb.Payload{Body: []byte("x")}}); err != nil {
		t.Fatal(err)
	}
	if _, err := stream.Recv(); err != nil {
		t.Fatal(err)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("ServeGRPC: got %v, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ServeGRPC still running 10s after ctx ended")
	}
	if _, err := stream.Recv(); err == nil {
		t.Error("call after stop: got a response, want an error")
	}
}
