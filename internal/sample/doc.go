// Package sample holds real upstream services for Postern's integration
// tests and for `postern demo`: an HTTP echo service and a gRPC service.
// They stand where a user's own services would stand behind an agent, so a
// test can see exactly what reached the upstream (which path the proxy
// forwarded, which headers it added or removed, whether the
// Postern-Jwt-Assertion header arrived) without a mock.
//
// The gateway and the agent never import this package; only tests, the
// integration suite and the demo command do.
//
// The HTTP service (HTTPHandler, ServeHTTP) answers any method and path with
// a JSON Echo of the request, and has a few paths that behave differently:
//
//	/status/{code}        answers that status code (200–599), with the Echo as body
//	/stream?n=N&size=S    N chunks (default 10) of S bytes (default 1024), flushed one
//	                      by one, no Content-Length; chunk i is all 'a'+i%26
//	                      (&ms=M waits M ms before each chunk after the first)
//	/upload               reads the body as a stream; its Echo gives the byte count and SHA-256
//	/ws                   WebSocket echo: each message comes back with its type
//	/slow?ms=N            waits N ms (default 1000, or until the request is canceled), then the Echo
//	/headers/big?kb=N     the Echo with a response header X-Big of N KiB (default 64)
//
// A bad parameter gets 400. ServeHTTP speaks HTTP/1.1 and cleartext HTTP/2.
//
// The gRPC service (NewGRPCServer, ServeGRPC) is grpc-go's interop
// grpc.testing.TestService, with the standard health service (every service
// SERVING) and server reflection, so grpcurl works against it without proto
// files. Every call, on every service, gets the incoming metadata key
// postern-jwt-assertion and every x-echo-* key back in its response header
// metadata.
package sample
