// Package builder is the builder role: it turns a deployment's source into
// an image in the registry. It works build tasks from the queue, claims each
// build through the builds store (internal/build) and holds it with a lease
// while it fetches and unpacks the source (internal/source), decides how to
// build it (internal/detect), runs BuildKit, pushes the result with
// registry-backed cache, and streams the output into the build's log
// (internal/buildlog).
//
// A finished build is handed on through Config.Built, inside the transaction
// that records it; internal/cli wires that to the operator, so neither role
// imports the other. Failures are sorted in two: a user's (a bad archive, a
// failing Dockerfile) ends the build and its deployment as failed, an
// infrastructure one gives the build back for the queue to retry.
package builder
