// Package version holds the build's version, set with
// -ldflags "-X github.com/zeitwork/zeitwork/internal/cli/version.Version=v1.2.3".
package version

// Version is "dev" in a build without the flag.
var Version = "dev"
