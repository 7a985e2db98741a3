package githubemu

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os/exec"
	"strings"
	"time"
)

// downloadTTL bounds how long a codeload URL works, as GitHub's do.
const downloadTTL = 5 * time.Minute

// tarball answers GET /repos/{owner}/{repo}/tarball/{ref} as GitHub does:
// a 302 to codeload whose URL carries its own short-lived token, or 404
// for a repository the installation cannot see or a ref it does not have.
func (e *Emulator) tarball(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	in, ok := e.installationOf(w, r)
	if !ok {
		e.mu.Unlock()
		return
	}
	repo, inst, found := e.repo(r.PathValue("owner") + "/" + r.PathValue("repo"))
	codeload := e.codeloadURL
	e.mu.Unlock()
	if !found || inst != in.ID {
		writeError(w, http.StatusNotFound, "Not Found") // GitHub hides private repositories this way
		return
	}
	if codeload == "" {
		writeError(w, http.StatusInternalServerError, "githubemu: SetURLs was not called, there is no codeload to redirect to")
		return
	}
	ref := r.PathValue("ref")
	commit, err := resolve(r.Context(), repo.Dir, ref)
	if err != nil {
		writeError(w, http.StatusNotFound, "Not Found")
		return
	}
	dl := randomHex(16)
	e.mu.Lock()
	e.downloads[dl] = download{repo: repo, commit: commit, expires: time.Now().Add(downloadTTL)}
	e.mu.Unlock()
	to := fmt.Sprintf("%s/%s/legacy.tar.gz/%s?token=%s", codeload, repo.FullName(), escapeRef(ref), dl)
	http.Redirect(w, r, to, http.StatusFound)
}

// Codeload returns the handler for the download host tarball requests
// redirect to. It refuses a request that carries an Authorization header:
// a client sending one has leaked its API token to another host.
func (e *Emulator) Codeload() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /{owner}/{repo}/legacy.tar.gz/{ref...}", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "" {
			http.Error(w, "githubemu: an Authorization header was sent to codeload", http.StatusBadRequest)
			return
		}
		e.mu.Lock()
		d, ok := e.downloads[r.URL.Query().Get("token")]
		e.mu.Unlock()
		if !ok || time.Now().After(d.expires) || d.repo.FullName() != r.PathValue("owner")+"/"+r.PathValue("repo") {
			http.Error(w, "404: Not Found", http.StatusNotFound)
			return
		}
		prefix := fmt.Sprintf("%s-%s-%s", d.repo.Owner, d.repo.Name, d.commit[:7])
		cmd := exec.CommandContext(r.Context(), "git", "-C", d.repo.Dir, "archive", "--format=tar.gz", "--prefix="+prefix+"/", d.commit)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		w.Header().Set("Content-Type", "application/x-gzip")
		w.Header().Set("Content-Disposition", "attachment; filename="+prefix+".tar.gz")
		cmd.Stdout = w
		if err := cmd.Run(); err != nil {
			// Headers are gone; cutting the connection makes the client
			// see a truncated body rather than a complete-looking one.
			panic(http.ErrAbortHandler)
		}
	})
	return mux
}

// resolve is the commit ref names in the local repository at dir.
func resolve(ctx context.Context, dir, ref string) (string, error) {
	out, err := git(ctx, dir, "rev-parse", "--verify", "--quiet", "--end-of-options", ref+"^{commit}")
	if err != nil {
		return "", fmt.Errorf("resolve %q: %w", ref, err)
	}
	return strings.TrimSpace(out), nil
}

func git(ctx context.Context, dir string, args ...string) (string, error) {
	var stdout, stderr bytes.Buffer
	cmd := exec.CommandContext(ctx, "git", append([]string{"-C", dir}, args...)...)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("git %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	return stdout.String(), nil
}

func escapeRef(ref string) string {
	parts := strings.Split(ref, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
