// Package http serves HTTP and gRPC clients at the gateway: it terminates
// HTTP/1.1 and HTTP/2 on a client's TLS connection, authenticates each
// request (the connection's SVID, or a bearer token), decides it by policy
// on its cleaned path or its gRPC method, and forwards what is allowed
// through a Transport that reaches the upstream over the tunnel: HTTP
// requests through an httputil.ReverseProxy, gRPC calls through a leaner
// relay of their own (headers, body flushed as it comes, trailers). Every request reaches the upstream with a Postern-Jwt-Assertion
// header that says who is calling; a client's own copy never does.
//
// Refusals follow SPEC §7: 401, 403 or 429 with a JSON body naming the rule
// for HTTP; trailers-only status 16, 7 or 8 for gRPC. Each request becomes
// an http.request or grpc.call event, refusals also an authz.deny event.
//
// The package knows nothing of agents or policy files: the gateway hands it
// an Authorizer, a Recorder, a Transport and the functions that check bearer
// tokens and sign assertions.
package http
