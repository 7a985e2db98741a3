// Package api is `zeitwork api`, the public API under /v1: the transport
// only. Handlers parse a request, call a domain package (account, project)
// and render its answer; authorization lives in the domain's queries, so
// a handler cannot forget it.
//
// # One contract
//
// Routes are declared with huma, code-first: each operation's Go types are
// both what the handler receives and what /v1/openapi.json documents, so
// the OpenAPI 3.1 document cannot drift from what is served (a test checks
// both directions). huma validates bodies against the same schema:
// unknown fields are refused, and bodies over 1 MiB are a 413.
//
// # Errors
//
// Every error is RFC 9457 problem+json, the unrouted 404/405s and panics
// included. A 5xx says only what failed, never why: the cause goes to the
// log with the request id the response carries in X-Request-Id.
//
// # GitHub's webhook
//
// POST /v1/webhook/github, mounted when the API has a webhook receiver, is
// documented like any operation but answered by package webhook: its
// signature is its authentication, its body is read raw (up to GitHub's
// 25 MiB) so the signature can be checked over the exact bytes, and its
// errors are httpapi's JSON, the shape GitHub's delivery log shows.
package api
