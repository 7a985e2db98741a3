package detect

// staticData is the Caddy stage that serves a directory of files
// (templates/caddy.tmpl). Caddy rather than a smaller server (busybox httpd)
// because it compresses, sends caching validators, and can fall back to
// index.html for single-page apps, in one static binary.
type staticData struct {
	Image string
	Port  int
	// From is the stage the files come from ("" for the build context) and
	// Src their directory there.
	From string
	Src  string
	// SPA makes unknown paths serve /index.html, for client-side routing.
	SPA bool
}

// detectStatic finds a site that needs no build: index.html at the root, or
// in public/ or dist/ of a tree without package.json (with one, those
// directories are a build's input or output, not the site).
func detectStatic(t *tree, images BaseImages) (Plan, bool, error) {
	d := staticData{Image: images.ref(images.Static, ""), Port: DefaultPort}
	var reasons []string
	switch {
	case t.isFile("index.html"):
		d.Src = "."
		reasons = append(reasons, "found index.html → static site")
	case t.isFile("package.json"):
		for _, f := range []string{"public/index.html", "dist/index.html"} {
			if t.isFile(f) {
				t.noteNear(f + " next to package.json (a build's input or output, not the site)")
			}
		}
		return Plan{}, false, nil
	case t.isFile("public/index.html"):
		d.Src = "public"
		reasons = append(reasons, "found public/index.html → static site from public/")
	case t.isFile("dist/index.html"):
		d.Src = "dist"
		reasons = append(reasons, "found dist/index.html → static site from dist/")
	default:
		return Plan{}, false, nil
	}
	df, err := render("static", d)
	return Plan{Dockerfile: df, Reasons: reasons}, err == nil, err
}
