package detect

import (
	"fmt"
	"regexp"
	"strings"
)

// The Next.js config files, in the order Next.js itself looks for them.
var nextConfigs = []string{"next.config.js", "next.config.mjs", "next.config.ts", "next.config.cjs", "next.config.mts"}

var nextStandalone = regexp.MustCompile("output\\s*:\\s*['\"`]standalone['\"`]")

// nodeFramework is a Node.js framework's app as findFramework found it.
type nodeFramework struct {
	cfg     string // its config file, "" if none
	pkg     *packageJSON
	node    nodeBuild
	reasons []string
}

// findFramework finds an app of the framework whose npm package is dep by
// one of its config files or by the dependency in package.json; ok is
// false when neither is there. title names the framework in errors.
func findFramework(t *tree, images BaseImages, dep, title string, configs []string) (f nodeFramework, ok bool, err error) {
	f.cfg = t.firstFile(configs...)
	if f.pkg, err = t.packageJSON(); err != nil {
		return f, false, err
	}
	var where string
	var found bool
	if f.pkg != nil {
		where, found = f.pkg.dependsOn(dep)
	}
	if f.cfg == "" && !found {
		return f, false, nil
	}
	if f.cfg != "" {
		f.reasons = append(f.reasons, "found "+f.cfg)
	}
	if found {
		f.reasons = append(f.reasons, fmt.Sprintf("package.json: %q in %s", dep, where))
	}
	if f.pkg == nil {
		return f, false, fmt.Errorf("found %s but no package.json: a %s app needs one to install %s", f.cfg, title, dep)
	}
	n, reasons := newNodeBuild(t, f.pkg, images)
	f.node, f.reasons = n, append(f.reasons, reasons...)
	return f, true, nil
}

func detectNext(t *tree, images BaseImages) (Plan, bool, error) {
	f, ok, err := findFramework(t, images, "next", "Next.js", nextConfigs)
	if !ok {
		return Plan{}, false, err
	}
	cfg, pkg, n, reasons := f.cfg, f.pkg, f.node, f.reasons

	d := nextData{Node: n, Port: DefaultPort, Build: "node_modules/.bin/next build"}
	if pkg.script("build") != "" {
		d.Build = n.run("build")
	}
	var explicit bool
	if cfg != "" {
		b, err := t.read(cfg)
		if err != nil {
			return Plan{}, false, err
		}
		explicit = nextStandalone.Match(b)
	}
	start := pkg.script("start")
	switch {
	case explicit:
		reasons = append(reasons, cfg+" sets output: \"standalone\" → node server.js")
	case start != "" && !strings.HasPrefix(start, "next start"):
		// A custom server runs from the whole app: it may require anything.
		d.Start = n.runtimeScript("start")
		reasons = append(reasons, fmt.Sprintf("custom start script %q → %s (it must listen on $PORT)", start, strings.Join(d.Start, " ")))
	default:
		reasons = append(reasons, "standalone output (NEXT_PRIVATE_STANDALONE) → node server.js; next start -p $PORT if the build makes none")
	}
	df, err := render("nextjs", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

type nextData struct {
	Node  nodeBuild
	Port  int
	Build string
	// Start is a custom server's start command; nil means the standalone
	// server, or next start when the build makes no standalone output.
	Start []string
}

var nuxtConfigs = []string{"nuxt.config.ts", "nuxt.config.js", "nuxt.config.mjs"}

func detectNuxt(t *tree, images BaseImages) (Plan, bool, error) {
	f, ok, err := findFramework(t, images, "nuxt", "Nuxt", nuxtConfigs)
	if !ok {
		return Plan{}, false, err
	}
	pkg, n, reasons := f.pkg, f.node, f.reasons

	d := nuxtData{Node: n, Port: DefaultPort, Build: "node_modules/.bin/nuxt build"}
	if build := pkg.script("build"); build != "" {
		d.Build = n.run("build")
		// `nuxt generate` prerenders every page into .output/public and
		// leaves no server to run: serve it as a static site.
		if strings.Contains(build, "nuxt generate") || strings.Contains(build, "nuxi generate") {
			d.Static = &staticData{Image: images.ref(images.Static, ""), Port: DefaultPort, From: "build", Src: "/app/.output/public"}
			reasons = append(reasons, "build script runs nuxt generate → static site from .output/public")
		}
	}
	if d.Static == nil {
		reasons = append(reasons, "node .output/server/index.mjs (Nitro reads $PORT)")
	}
	df, err := render("nuxt", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

type nuxtData struct {
	Node   nodeBuild
	Port   int
	Build  string
	Static *staticData // set for `nuxt generate`
}

// ssrFrameworks are Vite-based frameworks that build a server, not a static
// site: a project with one of them is not a single-page app.
var ssrFrameworks = []string{
	"@sveltejs/kit", "@remix-run/dev", "@react-router/dev", "@tanstack/react-start",
	"@solidjs/start", "@astrojs/node", "vike", "@builder.io/qwik-city", "@analogjs/platform",
}

// detectSPA finds single-page apps: a build that emits static files (Vite,
// Create React App, static Astro) and no server. It runs before plain Node
// because such apps' "start" scripts, when present, are development servers.
func detectSPA(t *tree, images BaseImages) (Plan, bool, error) {
	pkg, err := t.packageJSON()
	if err != nil || pkg == nil || pkg.script("build") == "" {
		return Plan{}, false, err
	}
	for _, f := range ssrFrameworks {
		if _, ok := pkg.dependsOn(f); ok {
			return Plan{}, false, nil
		}
	}
	// A "start" script other than the tool's own dev server means the app has
	// a server of its own: plain Node then.
	start := pkg.script("start")
	startsWith := func(tool string) bool { return start == "" || strings.HasPrefix(start, tool) }
	var out, tool string
	fallback := true
	switch {
	case has(pkg, "react-scripts"):
		out, tool = "build", "react-scripts"
	case has(pkg, "astro") && startsWith("astro"):
		// Astro builds one page per route: no fallback to index.html.
		out, tool, fallback = "dist", "astro", false
	case has(pkg, "vite") && !has(pkg, "astro") && startsWith("vite"):
		out, tool = "dist", "vite"
	default:
		return Plan{}, false, nil
	}
	reasons := []string{fmt.Sprintf("package.json: %s with a build script and no server → static site from %s/", tool, out)}
	n, nreasons := newNodeBuild(t, pkg, images)
	reasons = append(reasons, nreasons...)
	d := spaData{
		Node:   n,
		Build:  n.run("build"),
		Static: staticData{Image: images.ref(images.Static, ""), Port: DefaultPort, From: "build", Src: "/app/" + out, SPA: fallback},
	}
	df, err := render("spa", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

type spaData struct {
	Node   nodeBuild
	Build  string
	Static staticData
}

func has(pkg *packageJSON, dep string) bool {
	_, ok := pkg.dependsOn(dep)
	return ok
}

func detectNode(t *tree, images BaseImages) (Plan, bool, error) {
	pkg, err := t.packageJSON()
	if err != nil || pkg == nil {
		return Plan{}, false, err
	}
	start, main := pkg.script("start"), strings.TrimSpace(pkg.Main)
	if start == "" && main == "" {
		t.noteNear(`package.json without a "start" script or "main"`)
		return Plan{}, false, nil
	}
	n, reasons := newNodeBuild(t, pkg, images)
	d := nodeData{Node: n, Port: DefaultPort}
	if pkg.script("build") != "" {
		d.Build = n.run("build")
		reasons = append(reasons, "build script → "+d.Build)
	}
	if start != "" {
		d.Start = n.runtimeScript("start")
		reasons = append(reasons, fmt.Sprintf("start script %q → %s", start, strings.Join(d.Start, " ")))
	} else {
		d.Start = []string{n.nodeRunner(), main}
		reasons = append(reasons, fmt.Sprintf("main %q → %s", main, strings.Join(d.Start, " ")))
	}
	df, err := render("node", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}

type nodeData struct {
	Node  nodeBuild
	Port  int
	Build string // "" when package.json has no build script
	Start []string
}
