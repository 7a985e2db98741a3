// Package examples holds small apps that show the platform at work. They
// are embedded so that `zeitwork dev` can deploy hello on its first start
// from any working directory, with no checkout beside the binary.
package examples

import "embed"

// Hello is examples/hello: a Node.js HTTP server without dependencies,
// which the builder detects and builds from the local base images alone.
//
//go:embed hello
var Hello embed.FS
