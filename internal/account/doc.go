// Package account owns who is signed in: users (created from a GitHub
// profile), their personal organisation, browser sessions, API tokens,
// and device sign-ins, through which a CLI gets a token (device.go).
//
// # Secrets are never stored
//
// A session cookie, an API token and a device code are 32 random bytes the client keeps;
// the database keeps their SHA-256 only. A token is looked up by its hash,
// so a copy of the database (a backup, a replica) signs nobody in, and no
// comparison of secrets happens in Go at all. A revoked or expired session
// and a revoked token stop working on the next request: nothing is cached.
package account
