package cli

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/instance"
)

func (u *user) deployCmd() *cobra.Command {
	var noWait bool
	c := &cobra.Command{
		Use:   "deploy [dir]",
		Short: "deploy a directory",
		Long: "Packs the directory (default: the current one) without what its .gitignore and .zeitworkignore files\n" +
			"ignore, uploads it, deploys it to the linked project (or --project), follows the build log and prints the\n" +
			"URL once the deployment serves. Ctrl-C stops watching; the deployment goes on.",
		Args: args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			dir, err := u.cwd()
			if err != nil {
				return err
			}
			if len(a) == 1 {
				// Relative to -C, like every path the commands take.
				if dir = a[0]; !filepath.IsAbs(dir) {
					if dir, err = u.cwd(); err != nil {
						return err
					}
					dir = filepath.Join(dir, a[0])
				}
				if u.project == "" {
					// The directory's own link wins over the current one's.
					if _, _, err := findLink(dir); err == nil {
						u.dir = dir
					}
				}
			}
			if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
				return usagef("%s is not a directory", dir)
			}
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			p, err := u.currentProject(ctx, c)
			if err != nil {
				return err
			}
			key, err := u.upload(ctx, c, p, dir)
			if err != nil {
				return err
			}
			res, err := c.CreateDeploymentWithResponse(ctx, client.CreateDeploymentInputBody{ProjectId: p.Id, ArchiveKey: &key})
			if err := check(res, err); err != nil {
				return err
			}
			d := *res.JSON201
			fmt.Fprintf(u.env.Stderr, "Deploying %s: deployment %s\n", p.Slug, d.Id)
			if noWait {
				return u.deployResult(d)
			}
			// The build's log stream ends with the build: waiting on it,
			// even with --json and the lines unshown, costs no polling
			// while the build runs and learns its end at once.
			prog := u.newDeployProgress()
			u.logOut = u.env.Stderr
			if u.json {
				u.logOut = io.Discard
			}
			if prog != nil {
				u.lineHook = prog.line
			}
			source := client.GetDeploymentLogsParamsSourceBuild
			err = u.followLogs(ctx, c, d.Id, &source)
			u.lineHook = nil
			switch {
			case prog == nil:
			case ctx.Err() != nil: // Ctrl-C: leave the bar where it got to
				prog.end(false)
			default:
				prog.buildEnded(u.buildFailed(ctx, c, d))
			}
			if err != nil {
				return err
			}
			d, err = u.waitServing(ctx, c, d, prog)
			if prog != nil {
				prog.end(err == nil && ctx.Err() == nil)
			}
			if ctx.Err() != nil {
				fmt.Fprintf(u.env.Stderr, "Stopped watching; the deployment goes on: `zeitwork logs -f %s`\n", d.Id)
				return nil
			}
			if err != nil {
				return err
			}
			return u.deployResult(d)
		},
	}
	c.Flags().BoolVar(&noWait, "no-wait", false, "return once the deployment is created")
	return u.projectFlag(c)
}

func (u *user) deployResult(d client.Deployment) error {
	if u.json {
		return u.printJSON(d)
	}
	if d.Status == client.DeploymentStatusActive {
		fmt.Fprintln(u.env.Stdout, d.ProjectUrl)
	} else {
		fmt.Fprintln(u.env.Stdout, d.Id)
	}
	return nil
}

// servingPoll is how often waitServing asks after the deployment.
const servingPoll = 200 * time.Millisecond

// waitServing polls the deployment until it serves (active) or failed;
// with a progress display, it shows its instances turning healthy.
func (u *user) waitServing(ctx context.Context, c *client.ClientWithResponses, d client.Deployment, prog *deployProgress) (client.Deployment, error) {
	for {
		if prog != nil && d.Status == client.DeploymentStatusDeploying {
			if res, err := c.ListDeploymentInstancesWithResponse(ctx, d.Id.String()); err == nil && res.JSON200 != nil && res.JSON200.Items != nil {
				healthy := 0
				for _, i := range *res.JSON200.Items {
					if i.State == string(instance.StateHealthy) && i.DesiredState == string(instance.DesiredRunning) {
						healthy++
					}
				}
				prog.instances(healthy, int(d.Replicas))
			}
		}
		switch d.Status {
		case client.DeploymentStatusActive:
			return d, nil
		case client.DeploymentStatusFailed, client.DeploymentStatusStopped, client.DeploymentStatusRetiring:
			reason := string(d.Status)
			if d.FailureReason != nil {
				reason = *d.FailureReason
			}
			return d, fmt.Errorf("deployment %s did not go live: %s", d.Id, reason)
		}
		// The build is over by now, and starting its instances takes a
		// second or two: poll often enough that the command returns
		// within a fraction of that of the deployment going live.
		select {
		case <-ctx.Done():
			return d, ctx.Err()
		case <-time.After(servingPoll):
		}
		res, err := c.GetDeploymentWithResponse(ctx, d.Id.String())
		if err := check(res, err); err != nil {
			return d, err
		}
		d = *res.JSON200
	}
}

// buildFailed says whether d's build failed, for the display to show why.
func (u *user) buildFailed(ctx context.Context, c *client.ClientWithResponses, d client.Deployment) bool {
	res, err := c.GetDeploymentWithResponse(ctx, d.Id.String())
	return err == nil && res.JSON200 != nil && res.JSON200.Status == client.DeploymentStatusFailed
}

// upload packs dir into a temporary file and sends it the way the API
// says, returning the archive's key.
func (u *user) upload(ctx context.Context, c *client.ClientWithResponses, p client.Project, dir string) (string, error) {
	tmp, err := os.CreateTemp("", "zeitwork-deploy-*.tar.gz")
	if err != nil {
		return "", err
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	sum, err := writeArchive(tmp, dir)
	if err != nil {
		return "", err
	}
	size, err := tmp.Seek(0, io.SeekCurrent)
	if err != nil {
		return "", err
	}
	res, err := c.CreateUploadWithResponse(ctx, p.Id.String())
	if err := check(res, err); err != nil {
		return "", err
	}
	up := res.JSON201
	if size > up.MaxBytes {
		return "", fmt.Errorf("the archive of %s is %d bytes, over the API's %d: leave more out with .zeitworkignore", dir, size, up.MaxBytes)
	}
	fmt.Fprintf(u.env.Stderr, "Uploading %d files (%d KiB packed)…\n", sum.Files, (size+1023)/1024)
	if _, err := tmp.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	switch up.Method {
	case client.PUT:
		res, err := c.PutUploadWithBodyWithResponse(ctx, p.Id.String(), up.Id, "application/gzip", tmp)
		if err := check(res, err); err != nil {
			return "", err
		}
	case client.POST:
		if err := u.postToS3(ctx, up, tmp, size); err != nil {
			return "", err
		}
	default:
		return "", fmt.Errorf("the API asks for an upload method this CLI does not know (%q): update the CLI", up.Method)
	}
	return up.Key, nil
}

// postToS3 sends the archive as the presigned form S3 expects: every
// field, then the file. S3 wants the length up front, so the form's head
// and tail are built first and the archive streams between them.
func (u *user) postToS3(ctx context.Context, up *client.Upload, archive io.Reader, size int64) error {
	var head, tail bytes.Buffer
	form := multipart.NewWriter(&head)
	if up.Fields != nil {
		for k, v := range *up.Fields {
			if err := form.WriteField(k, v); err != nil {
				return err
			}
		}
	}
	if _, err := form.CreateFormFile("file", "source.tar.gz"); err != nil {
		return err
	}
	hlen := head.Len()
	if err := form.Close(); err != nil { // writes the closing boundary after the head
		return err
	}
	tail.Write(head.Bytes()[hlen:])
	head.Truncate(hlen)
	body := io.MultiReader(bytes.NewReader(head.Bytes()), io.LimitReader(archive, size), bytes.NewReader(tail.Bytes()))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, up.Url, body)
	if err != nil {
		return err
	}
	req.ContentLength = int64(head.Len()) + size + int64(tail.Len())
	req.Header.Set("Content-Type", form.FormDataContentType())
	// No API credentials: the form's signature is the permission.
	res, err := u.http().Do(req)
	if err != nil {
		return fmt.Errorf("upload to S3: %w", err)
	}
	defer res.Body.Close()
	if res.StatusCode/100 != 2 {
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4<<10))
		return fmt.Errorf("upload to S3: %s: %s", res.Status, body)
	}
	return nil
}
