package detect

import (
	"fmt"
	"go/ast"
	"go/build/constraint"
	"go/parser"
	"go/token"
	"path"
	"regexp"
	"strings"
)

type goData struct {
	Image    string
	Package  string // "." or "./cmd/<name>"
	Download bool   // go mod download in a layer of its own
	HasSum   bool
	Port     int
}

var (
	goModule = regexp.MustCompile(`(?m)^module\s+"?([^\s"]+)"?`)
	// safeName is what a directory name must look like to be written into a
	// RUN line unquoted.
	safeName    = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	majorSuffix = regexp.MustCompile(`^v\d+$`)
)

func detectGo(t *tree, images BaseImages) (Plan, bool, error) {
	if !t.isFile("go.mod") {
		return Plan{}, false, nil
	}
	gomod, err := t.read("go.mod")
	if err != nil {
		return Plan{}, false, err
	}
	reasons := []string{"found go.mod"}
	version, ok := goVersion(gomod)
	if ok {
		reasons = append(reasons, "go.mod → go "+version)
	} else {
		version = defaultGoVersion
		reasons = append(reasons, "go.mod names no go version → the latest Go")
	}

	module := ""
	if m := goModule.FindSubmatch(gomod); m != nil {
		module = string(m[1])
	}
	pkg, why, err := goMainPackage(t, module)
	if err != nil {
		return Plan{}, false, err
	}
	reasons = append(reasons, why)

	d := goData{
		Image:   images.ref(images.Go, version),
		Package: pkg,
		HasSum:  t.isFile("go.sum"),
		Port:    DefaultPort,
		// With a vendor directory or a go.work there is nothing to download
		// from go.mod and go.sum alone.
		Download: !t.isFile("vendor/modules.txt") && !t.isFile("go.work"),
	}
	df, err := render("go", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

// goMainPackage finds the one main package to build: at the root, else the
// only one under cmd/, else the one under cmd/ named like the module.
func goMainPackage(t *tree, module string) (pkg, why string, err error) {
	if t.hasMainPackage(".") {
		return ".", "main package at the root → go build .", nil
	}
	var cmds []string
	for _, d := range t.dirs("cmd") {
		if t.hasMainPackage("cmd/" + d) {
			cmds = append(cmds, d)
		}
	}
	base := path.Base(strings.TrimSuffix(module, "/"))
	if majorSuffix.MatchString(base) { // example.com/app/v2
		base = path.Base(path.Dir(module))
	}
	var pick string
	switch {
	case len(cmds) == 1:
		pick = cmds[0]
		why = fmt.Sprintf("main package in cmd/%s → go build ./cmd/%s", pick, pick)
	case len(cmds) > 1:
		for _, c := range cmds {
			if c == base {
				pick = c
			}
		}
		if pick == "" {
			return "", "", fmt.Errorf("go.mod: %d commands under cmd/ (%s) and none is named like the module; add a Dockerfile that builds the one to run", len(cmds), strings.Join(cmds, ", "))
		}
		why = fmt.Sprintf("commands under cmd/ (%s): cmd/%s is named like the module → go build ./cmd/%s", strings.Join(cmds, ", "), pick, pick)
	default:
		return "", "", fmt.Errorf("go.mod: no main package at the root or in cmd/*; add a Dockerfile that builds the program")
	}
	if !safeName.MatchString(pick) {
		return "", "", fmt.Errorf("go.mod: the command directory cmd/%q has characters that do not belong in a build command; add a Dockerfile", pick)
	}
	return "./cmd/" + pick, why, nil
}

// hasMainPackage says whether dir holds a main package that builds for
// linux: a //go:build ignore generator next to a library does not count.
func (t *tree) hasMainPackage(dir string) bool {
	for _, f := range t.files(dir, "*.go") {
		if strings.HasSuffix(f, "_test.go") || !goFileForLinux(path.Base(f)) {
			continue
		}
		src, err := t.read(f)
		if err != nil {
			continue
		}
		file, err := parser.ParseFile(token.NewFileSet(), f, src, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil || file.Name.Name != "main" {
			continue
		}
		if buildsForLinux(file.Comments, file.Package) {
			return true
		}
	}
	return false
}

// goFileForLinux applies the _GOOS and _GOARCH file name suffixes.
func goFileForLinux(name string) bool {
	parts := strings.Split(strings.TrimSuffix(name, ".go"), "_")
	for _, p := range parts[1:] {
		switch p {
		case "windows", "darwin", "freebsd", "netbsd", "openbsd", "plan9", "solaris", "js", "wasip1", "ios", "android", "aix", "illumos", "dragonfly":
			return false
		}
	}
	return true
}

// buildsForLinux evaluates the //go:build lines above the package clause for
// linux/amd64 and arm64 without cgo (the build sets CGO_ENABLED=0).
func buildsForLinux(groups []*ast.CommentGroup, pkgPos token.Pos) bool {
	for _, g := range groups {
		if g.Pos() > pkgPos {
			break
		}
		for _, c := range g.List {
			if !constraint.IsGoBuild(c.Text) {
				continue
			}
			expr, err := constraint.Parse(c.Text)
			if err != nil {
				return false
			}
			return expr.Eval(func(tag string) bool {
				switch tag {
				case "linux", "unix", "amd64", "arm64", "gc":
					return true
				}
				return strings.HasPrefix(tag, "go1.")
			})
		}
	}
	return true
}
