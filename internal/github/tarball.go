package github

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
)

// DownloadTarball streams the gzip'd tarball of owner/repo at ref (a commit
// SHA, branch or tag), as the installation sees it. GitHub redirects to
// codeload; the body is not buffered, and the caller closes it. Everything
// in it sits under one directory, owner-repo-sha7/.
func (c *Client) DownloadTarball(ctx context.Context, installationID int64, owner, repo, ref string) (io.ReadCloser, error) {
	op := fmt.Sprintf("download tarball %s/%s@%s", owner, repo, ref)
	if !validSegment(owner) || !validSegment(repo) || ref == "" || !validRef(ref) {
		return nil, fmt.Errorf("github: %s: invalid owner, repository or ref", op)
	}
	tok, err := c.InstallationToken(ctx, installationID)
	if err != nil {
		return nil, err
	}
	path := "/repos/" + url.PathEscape(owner) + "/" + url.PathEscape(repo) + "/tarball/" + escapeRef(ref)
	req, err := c.newRequest(ctx, http.MethodGet, path, tok.Value.Reveal(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := c.do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode == http.StatusOK {
		return resp.Body, nil
	}
	defer drain(resp)
	e := responseError(op, resp)
	switch {
	case errors.Is(e, ErrUnauthorized):
		c.forget(installationID, tok)
		e.Reason = "GitHub rejected the installation token"
	case errors.Is(e, ErrNotFound):
		e.Reason = "repository not found or the installation has no access"
	case errors.Is(e, ErrForbidden):
		e.Reason = "the installation may not read this repository's contents"
	}
	return nil, e
}

// validSegment refuses what would change the request's path rather than
// name something: empty, ".", ".." or a slash.
func validSegment(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.Contains(s, "/")
}

func validRef(ref string) bool {
	for p := range strings.SplitSeq(ref, "/") {
		if !validSegment(p) {
			return false
		}
	}
	return true
}

// escapeRef escapes each part of a ref but keeps its slashes: GitHub takes
// branch names like feature/x as they are.
func escapeRef(ref string) string {
	parts := strings.Split(ref, "/")
	for i, p := range parts {
		parts[i] = url.PathEscape(p)
	}
	return strings.Join(parts, "/")
}
