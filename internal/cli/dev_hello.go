package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/examples"
	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/githubemu"
)

// On its first start dev leaves a developer with something that works:
// the CLI signed in as the emulator's dev user and examples/hello serving
// as the project hello. Both are looked for before anything is made, so a
// restart reuses them.

// helloSlug is the project examples/hello is deployed to; its resources
// are small so that hello leaves the dev nodes free for the developer's
// own projects.
const (
	helloSlug      = "hello"
	helloCPUMillis = 100
	helloMemoryMB  = 64
)

// devLogin is the dev user's API token as dev uses it.
type devLogin struct {
	token string
	// path is the credentials file when the token is in it; "" when the
	// file holds the developer's login to another API, which dev leaves
	// alone.
	path string
	// other is that other API.
	other string
	// revoke forgets a token made only for this start; nil otherwise.
	revoke func(context.Context)
}

// signInDev gives the CLI a login as the dev user on the dev API at
// apiURL. A login to the dev API in the credentials file that still works
// is kept; otherwise the dev user signs in (in-process, as the GitHub
// sign-in would, admitted) and gets a new token, written to the file
// (0600) only when the file is absent or already names the dev API: a
// developer's login to another API is never overwritten.
func signInDev(ctx context.Context, store account.Store, u *user, apiURL string) (devLogin, error) {
	creds, readErr := u.loadCredentials()
	if readErr == nil && creds.Token != "" && sameAPI(creds.APIURL, apiURL) {
		if p, err := store.Bearer(ctx, creds.Token); err == nil {
			who, err := store.User(ctx, p.UserID)
			if err != nil {
				return devLogin{}, err
			}
			if who.GitHubUserID == githubemu.DevUserID {
				path, err := u.credentialsPath()
				return devLogin{token: creds.Token, path: path}, err
			}
		} else if !errors.Is(err, account.ErrUnauthenticated) {
			return devLogin{}, err
		}
	}
	who, _, err := store.SignIn(ctx, account.Profile{
		GitHubUserID: githubemu.DevUserID, Login: githubemu.DevLogin, Name: "Dev",
		Email: githubemu.DevLogin + "@zeitwork.localhost",
	})
	if err != nil {
		return devLogin{}, err
	}
	if !who.Admitted {
		// Whoever runs dev owns this installation: its dev user is not
		// put on the waitlist.
		if err := store.Admit(ctx, who.ID); err != nil {
			return devLogin{}, err
		}
	}
	tok, err := store.CreateToken(ctx, who.ID, "zeitwork dev: CLI login")
	if err != nil {
		return devLogin{}, err
	}
	l := devLogin{token: tok.Secret}
	empty := creds == savedLogin{}
	if readErr != nil || !(empty || sameAPI(creds.APIURL, apiURL)) {
		l.other = creds.APIURL
		if readErr != nil {
			l.other = "(unreadable: " + readErr.Error() + ")"
		}
		l.revoke = func(ctx context.Context) { _ = store.RevokeToken(ctx, who.ID, tok.ID) }
		return l, nil
	}
	if l.path, err = u.saveCredentials(savedLogin{APIURL: apiURL, Token: tok.Secret, TokenID: tok.ID.String()}); err != nil {
		return devLogin{}, err
	}
	return l, nil
}

// sameAPI says whether a login's API URL (empty: the CLI's default) is
// the dev API at apiURL, however the loopback host is spelled.
func sameAPI(login, apiURL string) bool {
	if login == "" {
		login = DefaultAPIURL
	}
	a, err1 := url.Parse(login)
	b, err2 := url.Parse(apiURL)
	if err1 != nil || err2 != nil {
		return false
	}
	loopback := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "localhost" || ip != nil && ip.IsLoopback()
	}
	return a.Scheme == b.Scheme && a.Port() == b.Port() && loopback(a.Hostname()) && loopback(b.Hostname()) &&
		(a.Path == "" || a.Path == "/")
}

// ensureHello makes examples/hello serve as the project hello and returns
// its URL, and whether this call deployed it. An active deployment is
// reused, one in progress waited for; only a project with neither gets a
// new deployment, uploaded the way `zeitwork deploy` uploads.
func ensureHello(ctx context.Context, c *client.ClientWithResponses, u *user, workDir string) (string, bool, error) {
	p, err := helloProject(ctx, c)
	if err != nil {
		return "", false, err
	}
	if p.ActiveDeploymentId != uuid.Nil {
		res, err := c.GetDeploymentWithResponse(ctx, p.ActiveDeploymentId.String())
		if err := check(res, err); err != nil {
			return "", false, err
		}
		if d := *res.JSON200; d.Status == client.DeploymentStatusActive {
			return d.ProjectUrl, false, nil
		}
	}
	ds, err := listDeployments(ctx, c, p.Id)
	if err != nil {
		return "", false, err
	}
	deployed := false
	var d client.Deployment
	if len(ds) > 0 && inProgress(ds[0].Status) {
		d = ds[0] // newest first
	} else {
		dir, err := writeHello(workDir)
		if err != nil {
			return "", false, err
		}
		key, err := u.upload(ctx, c, p, dir)
		if err != nil {
			return "", false, err
		}
		res, err := c.CreateDeploymentWithResponse(ctx, client.CreateDeploymentInputBody{ProjectId: p.Id, ArchiveKey: &key})
		if err := check(res, err); err != nil {
			return "", false, err
		}
		d, deployed = *res.JSON201, true
	}
	d, err = u.waitServing(ctx, c, d, nil)
	if err != nil {
		return "", deployed, err
	}
	return d.ProjectUrl, deployed, nil
}

func inProgress(s client.DeploymentStatus) bool {
	return s == client.DeploymentStatusQueued || s == client.DeploymentStatusBuilding || s == client.DeploymentStatusDeploying
}

// helloProject finds the dev user's project hello, creating it if absent.
func helloProject(ctx context.Context, c *client.ClientWithResponses) (client.Project, error) {
	ps, err := listProjects(ctx, c)
	if err != nil {
		return client.Project{}, err
	}
	for _, p := range ps {
		if p.Slug == helloSlug {
			return p, nil
		}
	}
	cpu, mem, slug, health := int32(helloCPUMillis), int32(helloMemoryMB), helloSlug, "/healthz"
	res, err := c.CreateProjectWithResponse(ctx, client.CreateProjectInputBody{
		Name: helloSlug, Slug: &slug, CpuMillis: &cpu, MemoryMb: &mem, HealthCheckPath: &health,
	})
	if err := check(res, err); err != nil {
		return client.Project{}, fmt.Errorf("create project %s: %w", helloSlug, err)
	}
	return *res.JSON201, nil
}

// writeHello puts the embedded examples/hello under dir, fresh, and
// returns where: dev deploys the copy built into the binary, wherever it
// runs from.
func writeHello(dir string) (string, error) {
	dst := filepath.Join(dir, "examples", "hello")
	if err := os.RemoveAll(dst); err != nil {
		return "", err
	}
	src, err := fs.Sub(examples.Hello, "hello")
	if err != nil {
		return "", err
	}
	if err := os.CopyFS(dst, src); err != nil {
		return "", fmt.Errorf("write examples/hello: %w", err)
	}
	return dst, nil
}

// waitHealthy polls url until it answers 200.
func waitHealthy(ctx context.Context, url string, within time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, within)
	defer cancel()
	for {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		res, err := http.DefaultClient.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s did not answer: %w", url, ctx.Err())
		case <-time.After(100 * time.Millisecond):
		}
	}
}
