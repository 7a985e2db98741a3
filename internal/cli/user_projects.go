package cli

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"

	"github.com/google/uuid"
	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

const pageSize int32 = 100

// all collects every page of a list: fetch gets the page after cursor
// (nil for the first) and returns its items and the next cursor.
func all[T any](fetch func(cursor *string) (*[]T, string, error)) ([]T, error) {
	var out []T
	var cursor *string
	for {
		items, next, err := fetch(cursor)
		if err != nil {
			return nil, err
		}
		if items != nil {
			out = append(out, *items...)
		}
		if next == "" {
			return out, nil
		}
		cursor = &next
	}
}

func listProjects(ctx context.Context, c *client.ClientWithResponses) ([]client.Project, error) {
	return all(func(cursor *string) (*[]client.Project, string, error) {
		limit := pageSize
		res, err := c.ListProjectsWithResponse(ctx, &client.ListProjectsParams{Cursor: cursor, Limit: &limit})
		if err := check(res, err); err != nil {
			return nil, "", err
		}
		return res.JSON200.Items, res.JSON200.NextCursor, nil
	})
}

// projectFlag adds --project to a command that works on one project.
func (u *user) projectFlag(c *cobra.Command) *cobra.Command {
	c.Flags().StringVarP(&u.project, "project", "p", "", "the project (id, slug or name; default: the one this directory is linked to)")
	return c
}

// findProject is the project ref names: an id, a slug or a name.
func findProject(ctx context.Context, c *client.ClientWithResponses, ref string) (client.Project, error) {
	if _, err := uuid.Parse(ref); err == nil {
		res, err := c.GetProjectWithResponse(ctx, ref)
		if err := check(res, err); err != nil {
			return client.Project{}, err
		}
		return *res.JSON200, nil
	}
	ps, err := listProjects(ctx, c)
	if err != nil {
		return client.Project{}, err
	}
	for _, p := range ps {
		if p.Slug == ref {
			return p, nil
		}
	}
	for _, p := range ps {
		if p.Name == ref {
			return p, nil
		}
	}
	return client.Project{}, codedError{ExitNotFound, fmt.Errorf("no project %q among yours; see `zeitwork projects`", ref)}
}

// currentProject is --project's project, or the linked directory's.
func (u *user) currentProject(ctx context.Context, c *client.ClientWithResponses) (client.Project, error) {
	if u.project != "" {
		return findProject(ctx, c, u.project)
	}
	dir, err := u.cwd()
	if err != nil {
		return client.Project{}, err
	}
	l, _, err := findLink(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return client.Project{}, usagef("no project: this directory is not linked; run `zeitwork link <project>` or pass --project")
	}
	if err != nil {
		return client.Project{}, err
	}
	return findProject(ctx, c, l.ProjectID)
}

func (u *user) projectsCmd() *cobra.Command {
	ls := &cobra.Command{Use: "ls", Short: "list your projects", Args: args(0, 0), RunE: u.projectsLs}
	var slug string
	var linkIt bool
	create := &cobra.Command{
		Use: "create <name>", Short: "create a project", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			body := client.CreateProjectInputBody{Name: a[0]}
			if slug != "" {
				body.Slug = &slug
			}
			res, err := c.CreateProjectWithResponse(cmd.Context(), body)
			if err := check(res, err); err != nil {
				return err
			}
			p := *res.JSON201
			u.printf("Created project %s (%s).\n", p.Slug, p.Id)
			if linkIt {
				if err := u.link(p); err != nil {
					return err
				}
			}
			return u.jsonResult(p)
		},
	}
	create.Flags().StringVar(&slug, "slug", "", "the first label of its host name (default: made from the name)")
	create.Flags().BoolVar(&linkIt, "link", false, "link the current directory to it")
	var yes bool
	rm := &cobra.Command{
		Use: "rm <project>", Short: "delete a project, its deployments and domains", Args: args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			if !yes {
				return usagef("deleting %s stops its deployments and frees its domains: pass --yes to do it", a[0])
			}
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			p, err := findProject(cmd.Context(), c, a[0])
			if err != nil {
				return err
			}
			res, err := c.DeleteProjectWithResponse(cmd.Context(), p.Id.String())
			if err := check(res, err); err != nil {
				return err
			}
			u.printf("Deleted project %s.\n", p.Slug)
			return u.jsonResult(map[string]any{"deleted": p.Id})
		},
	}
	rm.Flags().BoolVarP(&yes, "yes", "y", false, "really delete it")
	c := groupCmd("projects", "list, create and delete projects", ls, create, rm)
	c.Args, c.RunE = args(0, 0), u.projectsLs // `zeitwork projects` lists
	return c
}

func (u *user) projectsLs(cmd *cobra.Command, _ []string) error {
	c, err := u.signedIn()
	if err != nil {
		return err
	}
	ps, err := listProjects(cmd.Context(), c)
	if err != nil {
		return err
	}
	if u.json {
		return u.printJSON(orEmpty(ps))
	}
	rows := make([][]string, 0, len(ps))
	for _, p := range ps {
		rows = append(rows, []string{p.Slug, p.Name, p.Repository, p.Id.String(), ago(p.CreatedAt)})
	}
	u.table("No projects yet: create one with `zeitwork projects create <name>`.", []string{"SLUG", "NAME", "REPOSITORY", "ID", "CREATED"}, rows)
	return nil
}

// orEmpty makes a nil list print as [] in JSON.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func (u *user) linkCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "link <project>",
		Short: "link this directory to a project (writes " + linkFile + ")",
		Long:  "Commands run in the directory, or below it, then work on that project unless --project says otherwise.",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			p, err := findProject(cmd.Context(), c, a[0])
			if err != nil {
				return err
			}
			if err := u.link(p); err != nil {
				return err
			}
			return u.jsonResult(p)
		},
	}
}

func (u *user) link(p client.Project) error {
	dir, err := u.cwd()
	if err != nil {
		return err
	}
	creds, err := u.loadCredentials()
	if err != nil {
		return err
	}
	path, err := writeLink(dir, link{ProjectID: p.Id.String(), Slug: p.Slug, APIURL: u.apiURL(creds)})
	if err != nil {
		return err
	}
	abs, _ := filepath.Abs(filepath.Dir(filepath.Dir(path))) // for the message only
	u.printf("Linked %s to %s.\n", abs, p.Slug)
	return nil
}

func (u *user) openCmd() *cobra.Command {
	return u.projectFlag(&cobra.Command{
		Use:   "open",
		Short: "print the project's URL and open it in a browser",
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
			// Every deployment carries its project's URL; the project
			// itself does not know the apps domain.
			one := int32(1)
			res, err := c.ListDeploymentsWithResponse(cmd.Context(), &client.ListDeploymentsParams{ProjectId: &p.Id, Limit: &one})
			if err := check(res, err); err != nil {
				return err
			}
			if res.JSON200.Items == nil || len(*res.JSON200.Items) == 0 {
				return fmt.Errorf("%s has no deployment yet: nothing to open", p.Slug)
			}
			url := (*res.JSON200.Items)[0].ProjectUrl
			if u.json {
				return u.printJSON(map[string]string{"url": url})
			}
			fmt.Fprintln(u.env.Stdout, url)
			u.openBrowser(url)
			return nil
		},
	})
}
