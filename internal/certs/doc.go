// Package certs owns the edge's TLS certificates: ACME through certmagic,
// with certificates, ACME accounts, challenge tokens and locks stored in
// Postgres so that every edge replica shares them. Platform domains get
// wildcard certificates by DNS-01 (Cloudflare); a custom domain gets its
// certificate on demand at its first TLS handshake, and only once it is
// verified: never for a name nobody verified.
package certs
