// Package login is how a Postgres session starts behind Postern: the gateway
// terminates the client's startup and decides the database role, and the
// agent — the only one holding the role's secret — logs in to the server as
// that role and hands the logged-in connection over to a byte relay.
//
// wire.go is the gateway–agent part: the stream header's Params that name
// the role, database and startup parameters (or a backend key to cancel),
// and the startup reply (WriteStartup, WriteError, ReadStartup) that tells
// the gateway what the server said.
//
// login.go is the server part: Open logs in with pgconn (SCRAM-SHA-256,
// MD5, cleartext password or a client certificate, over TLS or not) and
// hijacks the connection; Cancel sends a CancelRequest. A login the server
// refuses comes back as a *LoginError carrying the server's own
// ErrorResponse, so the client sees the real FATAL (28P01, 3D000…); not
// reaching the server at all is a plain error, so the gateway may try
// another agent.
//
// # Hijacking without losing bytes
//
// pgconn reads through a pgproto3.Frontend (its own read buffer) on top of
// a background reader that it starts when a write is slow (over 15ms) and
// that may still be blocked in a Read of the socket after it was told to
// stop. Either could hold bytes that the server sent after ReadyForQuery,
// and a Read left pending would steal the first answer meant for the
// client. At login an idle server sends nothing after ReadyForQuery until
// it is asked (a shutdown's FATAL is the exception), so both are normally
// empty; Open still calls SyncConn before Hijack, which, only when the
// background reader is not stopped or the buffer is not empty, sends an
// empty query and reads its answer until both are. After Hijack, Open
// checks the Frontend's buffer once more and refuses the connection if a
// byte is left. The connection Open returns therefore has nothing read
// ahead and no reader but its owner.
//
// pgconn.ParseConfig reads PG* environment variables and ~/.pgpass. Open
// pins or overwrites every setting they could change (host, port, TLS,
// password file, fallbacks, runtime parameters, target_session_attrs,
// protocol versions, channel binding, require_auth), so the environment of
// the agent does not change how it logs in; only PGSERVICE can still make
// the parse fail, as it names a service file to read.
package login
