// Package protocols is the shared vocabulary of Postern's protocol handlers:
// the Request an Authorizer decides on, the Decision it returns, and the
// Events a Recorder writes into a session's recording.
//
// It exists so that the gateway, the policy engine, the audit trail and every
// protocol handler (tcp, postgres, http, grpc) can meet without importing one
// another. Packages under protocols/ never import gateway/ or agent/.
package protocols
