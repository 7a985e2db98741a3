package detect

import (
	"fmt"
	"regexp"
	"strings"
)

// BaseImages names the images generated Dockerfiles start from. Each image is
// a repository:tag under Registry, where "{version}" stands for the version
// the project asks for (.nvmrc, go.mod, .ruby-version, composer.json).
//
// Every default lives on Docker Hub, so that one pull-through mirror serves
// them all: production sets Registry to the mirror, tests set it to the local
// registry holding images built on the machine (or override single images).
// Go programs run on scratch, which is never pulled.
type BaseImages struct {
	// Registry is prepended, with a slash, to every image below.
	Registry string

	Node     string // Node.js, also the build stage of Next.js, Nuxt, single-page apps and assets
	Bun      string // only its bun binary is copied, into a Node image
	Go       string // the Go toolchain (build stage only)
	Ruby     string // Rails
	PHP      string // Laravel, served by FrankenPHP
	Composer string // only its composer binary is copied
	Static   string // Caddy, serving static files
}

// The default versions, used when the project names none. Node's is the LTS
// line Railpack also defaults to; "1" and the others are floating tags of the
// current release.
const (
	defaultNodeVersion = "22"
	defaultBunVersion  = "1"
	defaultGoVersion   = "1"
	defaultRubyVersion = "3.4"
	defaultPHPVersion  = "8.4"
)

// DefaultBaseImages are the production images, straight from Docker Hub.
// All Debian-based images are bookworm so that binaries copied between them
// (node into the Rails build, bun into a Node image) find the same libc.
func DefaultBaseImages() BaseImages {
	return BaseImages{
		Registry: "docker.io",
		Node:     "library/node:{version}-bookworm-slim",
		Bun:      "oven/bun:{version}-slim",
		Go:       "library/golang:{version}-bookworm",
		Ruby:     "library/ruby:{version}-slim-bookworm",
		PHP:      "dunglas/frankenphp:1-php{version}-bookworm",
		Composer: "library/composer:2",
		Static:   "library/caddy:2-alpine",
	}
}

// WithRegistry returns the default images under another registry, e.g. a
// pull-through cache of Docker Hub.
func WithRegistry(registry string) BaseImages {
	b := DefaultBaseImages()
	b.Registry = registry
	return b
}

func (b BaseImages) withDefaults() BaseImages {
	d := DefaultBaseImages()
	fill := func(v *string, def string) {
		if *v == "" {
			*v = def
		}
	}
	fill(&b.Registry, d.Registry)
	fill(&b.Node, d.Node)
	fill(&b.Bun, d.Bun)
	fill(&b.Go, d.Go)
	fill(&b.Ruby, d.Ruby)
	fill(&b.PHP, d.PHP)
	fill(&b.Composer, d.Composer)
	fill(&b.Static, d.Static)
	return b
}

// imageRefPattern is deliberately narrower than the OCI grammar: what matters
// here is that a reference cannot break the FROM line it is written into.
var imageRefPattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:/@+{}-]*$`)

func (b BaseImages) validate() error {
	for _, f := range []struct{ name, v string }{
		{"Registry", b.Registry}, {"Node", b.Node}, {"Bun", b.Bun}, {"Go", b.Go},
		{"Ruby", b.Ruby}, {"PHP", b.PHP}, {"Composer", b.Composer}, {"Static", b.Static},
	} {
		if !imageRefPattern.MatchString(f.v) {
			return fmt.Errorf("base images: %s %q is not an image reference", f.name, f.v)
		}
	}
	return nil
}

// ref returns the full reference of image at version. Versions reach here
// only through the parsers in version.go, which accept nothing but digits,
// dots and letters, so the result is always a valid reference.
func (b BaseImages) ref(image, version string) string {
	return strings.TrimSuffix(b.Registry, "/") + "/" + strings.ReplaceAll(image, "{version}", version)
}
