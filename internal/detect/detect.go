// Package detect owns deciding how a source tree is built: it finds the
// repository's own Dockerfile, or recognises the framework (Rails, Laravel,
// Next.js, Nuxt, Go, Node, static sites) and generates a production Dockerfile
// for it. It only reads the tree it is given; fetching sources, running
// BuildKit and pushing images belong to the builder.
//
// Generated images listen on $PORT (DefaultPort when the platform sets none),
// on every address, IPv6 included, because instances are reached at
// [ipv6]:port. They run as a non-root user, carry no secrets (no ARG, no ENV
// for credentials: secrets reach the app at run time only), and take their
// base images from BaseImages so that production can pull through a mirror and
// tests can use images built on the machine.
package detect

import (
	"errors"
	"io/fs"
	"strings"
)

// DefaultPort is the port generated images listen on when $PORT is not set.
const DefaultPort = 8080

// Kind is how a source tree is built.
type Kind string

// The kinds Detect knows, listed in the order of precedence (see detectors).
const (
	KindDockerfile Kind = "dockerfile"
	KindRails      Kind = "rails"
	KindLaravel    Kind = "laravel"
	KindNextJS     Kind = "nextjs"
	KindNuxt       Kind = "nuxt"
	KindGo         Kind = "go"
	KindNode       Kind = "node"
	KindStatic     Kind = "static"
)

// Options are the project's build settings.
type Options struct {
	// DockerfilePath is the project's Dockerfile setting, relative to the
	// source root. "" means "Dockerfile" if the root has one, else detection.
	// A path that is set but missing is an error, never a silent fallback.
	DockerfilePath string
	// BaseImages names the images generated Dockerfiles start from. Zero
	// fields take DefaultBaseImages' values.
	BaseImages BaseImages
}

// Plan is how to build one source tree.
type Plan struct {
	Kind Kind
	// Dockerfile is the repository's own (Kind == KindDockerfile) or the
	// generated one.
	Dockerfile []byte
	// DockerfilePath is where the repository's own Dockerfile sits in the
	// build context; "" when the Dockerfile is generated, in which case the
	// builder hands Dockerfile to BuildKit as the dockerfile input.
	DockerfilePath string
	// DockerIgnore is a default .dockerignore for a generated build whose
	// source has none (nil otherwise): the builder adds it to the context so
	// that node_modules, .git and local secrets stay out of the image.
	DockerIgnore []byte
	// Reasons say what was found and what it decided, in order, for the
	// build log: "found next.config.mjs", "pnpm-lock.yaml → pnpm".
	Reasons []string
}

// ErrDockerfileNotFound is returned (wrapped, naming the path) when the
// project's DockerfilePath setting names a file the source does not have.
var ErrDockerfileNotFound = errors.New("dockerfile not found")

// ErrNoMatch is returned (as a *NoMatchError) when nothing in the source says
// how to build it.
var ErrNoMatch = errors.New("nothing to build")

// NoMatchError says what Detect looked for, so that the user can tell which
// file to add.
type NoMatchError struct {
	// LookedFor lists each kind's signals in the order they were tried.
	LookedFor []string
	// Found lists what was there but not enough, e.g. "package.json without a
	// start script or main".
	Found []string
}

func (e *NoMatchError) Error() string {
	var b strings.Builder
	b.WriteString("nothing to build: no Dockerfile and no framework recognised; looked for, in order:")
	for _, l := range e.LookedFor {
		b.WriteString("\n  - ")
		b.WriteString(l)
	}
	if len(e.Found) > 0 {
		b.WriteString("\nfound:")
		for _, f := range e.Found {
			b.WriteString("\n  - ")
			b.WriteString(f)
		}
	}
	b.WriteString("\nadd a Dockerfile, or one of the files above")
	return b.String()
}

// Is makes errors.Is(err, ErrNoMatch) true.
func (e *NoMatchError) Is(target error) bool { return target == ErrNoMatch }

// A detector recognises one kind. It returns ok == false when the tree is not
// of its kind, and an error when the tree is of its kind but cannot be built
// (a broken package.json, two Go commands to choose from): guessing another
// kind then would build the wrong thing.
type detector struct {
	kind      Kind
	lookedFor string
	detect    func(t *tree, images BaseImages) (plan Plan, ok bool, err error)
}

// detectors in order of precedence; the first that matches wins.
//
//   - Rails and Laravel come first: their package.json only builds assets, and
//     their marker files (config/application.rb, artisan) are unambiguous.
//   - Next.js and Nuxt come before Go and plain Node: a framework beats the
//     runtime it runs on, and its config file is a stronger signal than go.mod
//     in a repository that holds both.
//   - Go comes before plain Node because a package.json next to go.mod is
//     usually tooling (formatters, CSS), while go.mod is the program.
//   - A single-page app (Vite, Create React App) comes before plain Node
//     because its "start" script, if any, is a development server.
//   - Static comes last: an index.html is a weak signal that most of the above
//     also have.
var detectors = []detector{
	{KindRails, "Rails: Gemfile and config/application.rb (with the rails gem)", detectRails},
	{KindLaravel, "Laravel: artisan and composer.json requiring laravel/framework", detectLaravel},
	{KindNextJS, `Next.js: next.config.{js,mjs,ts,cjs,mts} or "next" in package.json dependencies`, detectNext},
	{KindNuxt, `Nuxt: nuxt.config.{ts,js,mjs} or "nuxt" in package.json dependencies`, detectNuxt},
	{KindGo, "Go: go.mod with a main package at the root or in a single cmd/*", detectGo},
	{KindStatic, `single-page app: package.json with a "build" script and vite or react-scripts`, detectSPA},
	{KindNode, `Node: package.json with a "start" script or "main"`, detectNode},
	{KindStatic, "static site: index.html, or public/index.html or dist/index.html without package.json", detectStatic},
}

// Detect looks at the source tree (rooted at the project's root directory)
// and decides how to build it. It reads files and nothing else, none larger
// than 1 MiB. src should not follow links out of the tree: pass the FS of an
// os.Root, or a tree whose unpacking refused such links.
func Detect(src fs.FS, opts Options) (Plan, error) {
	images := opts.BaseImages.withDefaults()
	if err := images.validate(); err != nil {
		return Plan{}, err
	}
	t := newTree(src)

	plan, ok, err := detectDockerfile(t, opts.DockerfilePath)
	if err != nil || ok {
		return plan, err
	}

	lookedFor := []string{"Dockerfile"}
	for _, d := range detectors {
		plan, ok, err := d.detect(t, images)
		if err != nil {
			return Plan{}, err
		}
		if ok {
			plan.Kind = d.kind
			if !t.isFile(".dockerignore") {
				plan.DockerIgnore = dockerIgnore(d.kind)
			}
			return plan, nil
		}
		lookedFor = append(lookedFor, d.lookedFor)
	}
	return Plan{}, &NoMatchError{LookedFor: lookedFor, Found: t.near}
}
