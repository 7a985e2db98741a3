package cli

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

func listEnv(ctx context.Context, c *client.ClientWithResponses, project string) ([]client.EnvVariable, error) {
	return all(func(cursor *string) (*[]client.EnvVariable, string, error) {
		limit := pageSize
		res, err := c.ListEnvWithResponse(ctx, project, &client.ListEnvParams{Cursor: cursor, Limit: &limit})
		if err := check(res, err); err != nil {
			return nil, "", err
		}
		return res.JSON200.Items, res.JSON200.NextCursor, nil
	})
}

// envCmd manages environment variables. Values go to the API and, with
// `pull`, to a file the user asked for; ls and every message print names
// only, so a terminal recording or CI log never shows a secret.
func (u *user) envCmd() *cobra.Command {
	// withProject runs f with a signed-in client and the current project.
	withProject := func(f func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, a []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			p, err := u.currentProject(cmd.Context(), c)
			if err != nil {
				return err
			}
			return f(cmd.Context(), c, p, a)
		}
	}
	ls := &cobra.Command{
		Use: "ls", Short: "list the variables' names (never their values)", Args: args(0, 0),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, _ []string) error {
			vs, err := listEnv(ctx, c, p.Id.String())
			if err != nil {
				return err
			}
			if u.json {
				return u.printJSON(orEmpty(vs))
			}
			rows := make([][]string, 0, len(vs))
			for _, v := range vs {
				rows = append(rows, []string{v.Name, ago(v.UpdatedAt)})
			}
			u.table(fmt.Sprintf("%s has no environment variables.", p.Slug), []string{"NAME", "UPDATED"}, rows)
			return nil
		}),
	}
	set := &cobra.Command{
		Use: "set NAME=VALUE...", Short: "set variables; the next deployment gets them", Args: args(1, -1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			// Every argument is checked before the first is sent.
			type pair struct{ name, value string }
			pairs := make([]pair, 0, len(a))
			for _, arg := range a {
				name, value, ok := strings.Cut(arg, "=")
				if !ok || name == "" {
					return usagef("%q is not NAME=VALUE", name)
				}
				pairs = append(pairs, pair{name, value})
			}
			var set []client.EnvVariable
			for _, kv := range pairs {
				res, err := c.SetEnvWithResponse(ctx, p.Id.String(), kv.name, client.SetEnvInputBody{Value: kv.value})
				if err := check(res, err); err != nil {
					return fmt.Errorf("%s: %w", kv.name, err)
				}
				set = append(set, *res.JSON200)
				u.printf("Set %s.\n", kv.name)
			}
			return u.jsonResult(set)
		}),
	}
	unset := &cobra.Command{
		Use: "unset NAME...", Short: "remove variables", Args: args(1, -1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			for _, name := range a {
				res, err := c.DeleteEnvWithResponse(ctx, p.Id.String(), name)
				if err := check(res, err); err != nil {
					return fmt.Errorf("%s: %w", name, err)
				}
				u.printf("Removed %s.\n", name)
			}
			return u.jsonResult(map[string]any{"removed": a})
		}),
	}
	pull := &cobra.Command{
		Use: "pull [file]", Short: "write the variables to a .env file (default: .env here; - for stdout)", Args: args(0, 1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			vs, err := listEnv(ctx, c, p.Id.String())
			if err != nil {
				return err
			}
			var b strings.Builder
			for _, v := range vs {
				res, err := c.GetEnvWithResponse(ctx, p.Id.String(), v.Name)
				if err := check(res, err); err != nil {
					return fmt.Errorf("%s: %w", v.Name, err)
				}
				fmt.Fprintf(&b, "%s=%s\n", v.Name, dotenvQuote(res.JSON200.Value))
			}
			if len(a) == 1 && a[0] == "-" {
				_, err := fmt.Fprint(u.env.Stdout, b.String())
				return err
			}
			dir, err := u.cwd()
			if err != nil {
				return err
			}
			path := filepath.Join(dir, ".env")
			if len(a) == 1 {
				path = a[0]
				if !filepath.IsAbs(path) {
					path = filepath.Join(dir, path)
				}
			}
			// It holds secrets: readable by the owner only.
			if err := os.WriteFile(path, []byte(b.String()), 0o600); err != nil {
				return fmt.Errorf("write %s: %w", path, err)
			}
			if err := os.Chmod(path, 0o600); err != nil { // an existing file kept its mode
				return err
			}
			u.printf("Wrote %d variables to %s.\n", len(vs), path)
			return u.jsonResult(map[string]any{"file": path, "count": len(vs)})
		}),
	}
	for _, c := range []*cobra.Command{ls, set, unset, pull} {
		u.projectFlag(c)
	}
	return groupCmd("env", "manage the project's environment variables", ls, set, unset, pull)
}

// dotenvQuote is value in double quotes, escaped the way dotenv readers
// (docker compose, Node's dotenv, direnv) read it back.
func dotenvQuote(value string) string {
	r := strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`, "\r", `\r`, "$", `\$`)
	return `"` + r.Replace(value) + `"`
}
