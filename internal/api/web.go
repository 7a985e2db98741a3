package api

import (
	"errors"
	"io"
	"io/fs"
	"net/http"
	"path"
	"strings"
)

// Web serves the dashboard's static bundle (packages/web's .output/public)
// under / on the API's own origin, so the dashboard signs in with the
// session cookie and needs no CORS. /v1 and everything below it stays the
// API's, problem+json 404s included; so do methods other than GET and HEAD.
// A GET of a path that is not a file answers the bundle's index.html: the
// dashboard routes in the browser (/projects/<id> is a page, not a file).
func Web(api http.Handler, bundle fs.FS) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Path
		if p == "/v1" || strings.HasPrefix(p, "/v1/") || (r.Method != http.MethodGet && r.Method != http.MethodHead) {
			api.ServeHTTP(w, r)
			return
		}
		// The dashboard may not be framed by another site (clickjacking).
		w.Header().Set("Content-Security-Policy", "frame-ancestors 'none'")
		w.Header().Set("X-Content-Type-Options", "nosniff")
		name := strings.TrimPrefix(path.Clean(p), "/")
		if name == "" {
			name = "."
		}
		if fi, err := fs.Stat(bundle, name); err == nil && fi.IsDir() {
			name = path.Join(name, "index.html")
		}
		switch fi, err := fs.Stat(bundle, name); {
		case err == nil && !fi.IsDir():
			if strings.HasPrefix(name, "_nuxt/") {
				// Nuxt names its assets by their content hash: they never change.
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			} else {
				w.Header().Set("Cache-Control", "no-cache")
			}
			serveFile(w, r, bundle, name)
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			writeProblem(w, http.StatusInternalServerError, "cannot read the dashboard")
		case strings.HasPrefix(name, "_nuxt/"):
			// An asset of an older build: index.html in its place would be
			// parsed as a script.
			http.NotFound(w, r)
		default:
			w.Header().Set("Cache-Control", "no-cache")
			serveFile(w, r, bundle, "index.html")
		}
	})
}

// serveFile serves one file of the bundle. http.ServeFileFS would redirect
// a request for …/index.html; its content is served here under any path.
func serveFile(w http.ResponseWriter, r *http.Request, bundle fs.FS, name string) {
	f, err := bundle.Open(name)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			writeProblem(w, http.StatusNotFound, "the dashboard is not built")
			return
		}
		writeProblem(w, http.StatusInternalServerError, "cannot read the dashboard")
		return
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		writeProblem(w, http.StatusInternalServerError, "cannot read the dashboard")
		return
	}
	rs, ok := f.(io.ReadSeeker)
	if !ok {
		writeProblem(w, http.StatusInternalServerError, "cannot read the dashboard")
		return
	}
	http.ServeContent(w, r, path.Base(name), fi.ModTime(), rs)
}
