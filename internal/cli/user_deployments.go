package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

func listDeployments(ctx context.Context, c *client.ClientWithResponses, project uuid.UUID) ([]client.Deployment, error) {
	return all(func(cursor *string) (*[]client.Deployment, string, error) {
		limit := pageSize
		res, err := c.ListDeploymentsWithResponse(ctx, &client.ListDeploymentsParams{ProjectId: &project, Cursor: cursor, Limit: &limit})
		if err := check(res, err); err != nil {
			return nil, "", err
		}
		return res.JSON200.Items, res.JSON200.NextCursor, nil
	})
}

func (u *user) deploymentsCmd() *cobra.Command {
	var limit int
	c := &cobra.Command{
		Use:   "deployments",
		Short: "list the project's deployments, newest first",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			p, err := u.currentProject(cmd.Context(), c)
			if err != nil {
				return err
			}
			ds, err := listDeployments(cmd.Context(), c, p.Id)
			if err != nil {
				return err
			}
			if limit > 0 && len(ds) > limit {
				ds = ds[:limit]
			}
			if u.json {
				return u.printJSON(orEmpty(ds))
			}
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				status := u.status(string(d.Status))
				if d.Id == p.ActiveDeploymentId {
					status += " (live)"
				}
				rows = append(rows, []string{d.Id.String(), status, string(d.Environment), source(d), ago(d.CreatedAt), d.Url})
			}
			u.table(fmt.Sprintf("%s has no deployments yet.", p.Slug), []string{"ID", "STATUS", "ENVIRONMENT", "SOURCE", "CREATED", "URL"}, rows)
			return nil
		},
	}
	c.Flags().IntVarP(&limit, "limit", "n", 20, "show at most this many (0: all)")
	return u.projectFlag(c)
}

// source is where a deployment's code came from, in a few words.
func source(d client.Deployment) string {
	deref := func(s *string) string {
		if s == nil {
			return ""
		}
		return *s
	}
	if d.SourceType == client.DeploymentSourceTypeUpload {
		return "upload"
	}
	sha := deref(d.CommitSha)
	if len(sha) > 7 {
		sha = sha[:7]
	}
	return strings.TrimSpace(deref(d.Branch) + " " + sha)
}

func (u *user) rollbackCmd() *cobra.Command {
	return u.projectFlag(&cobra.Command{
		Use:   "rollback [deployment]",
		Short: "make an earlier production deployment live again",
		Long:  "The deployment is an id, or the start of one as `zeitwork deployments` shows it.",
		Args:  args(0, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			ctx := cmd.Context()
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			target, err := u.rollbackTarget(ctx, c, a)
			if err != nil {
				return err
			}
			// The plain call: 202 (the operator switches over) is not in
			// the document, and the parsing one refuses its body.
			res, err := c.SetDeploymentStatus(ctx, target.String(),
				client.SetDeploymentStatusInputBody{Status: client.SetDeploymentStatusInputBodyStatusActive})
			if err != nil {
				return fmt.Errorf("the API: %w", err)
			}
			defer res.Body.Close()
			body, err := io.ReadAll(res.Body)
			if err != nil {
				return fmt.Errorf("the API: %w", err)
			}
			if err := apiError(client.CheckStatus(res.StatusCode, body)); err != nil {
				return err
			}
			var d client.Deployment
			if err := json.Unmarshal(body, &d); err != nil {
				return fmt.Errorf("the API's answer: %w", err)
			}
			if res.StatusCode == http.StatusAccepted {
				u.printf("Rolling back to %s: it answers at %s once its instances are up.\n", d.Id, d.ProjectUrl)
			} else {
				u.printf("%s is already live at %s.\n", d.Id, d.ProjectUrl)
			}
			return u.jsonResult(d)
		},
	})
}

// rollbackTarget is the deployment named (an id or a prefix of one of the
// project's), or the production deployment live most recently before the
// current one.
func (u *user) rollbackTarget(ctx context.Context, c *client.ClientWithResponses, a []string) (uuid.UUID, error) {
	if len(a) == 1 {
		if id, err := uuid.Parse(a[0]); err == nil {
			return id, nil
		}
	}
	p, err := u.currentProject(ctx, c)
	if err != nil {
		return uuid.Nil, err
	}
	ds, err := listDeployments(ctx, c, p.Id)
	if err != nil {
		return uuid.Nil, err
	}
	if len(a) == 1 {
		var match []uuid.UUID
		for _, d := range ds {
			if strings.HasPrefix(d.Id.String(), strings.ToLower(a[0])) {
				match = append(match, d.Id)
			}
		}
		switch len(match) {
		case 0:
			return uuid.Nil, codedError{ExitNotFound, fmt.Errorf("no deployment %q in %s", a[0], p.Slug)}
		case 1:
			return match[0], nil
		}
		return uuid.Nil, usagef("%q is the start of %d deployments' ids: give more of it", a[0], len(match))
	}
	var best *client.Deployment
	for i, d := range ds {
		if d.Environment != client.DeploymentEnvironmentProduction || d.ActiveAt == nil || d.Id == p.ActiveDeploymentId {
			continue
		}
		if d.Status != client.DeploymentStatusRetiring && d.Status != client.DeploymentStatusStopped {
			continue
		}
		if best == nil || d.ActiveAt.After(*best.ActiveAt) {
			best = &ds[i]
		}
	}
	if best == nil {
		return uuid.Nil, fmt.Errorf("%s has no earlier production deployment to roll back to", p.Slug)
	}
	return best.Id, nil
}
