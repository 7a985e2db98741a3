// Package version owns the build's version string, which every role
// reports (the CLI's `version`, the operator's and node agent's logs and
// registrations). It sits apart from internal/cli so that roles can read it
// without importing the composition root. Set it with
// -ldflags "-X github.com/zeitwork/zeitwork/internal/version.Version=v1.2.3".
package version

// Version is "dev" in a build without the flag.
var Version = "dev"
