package cli

import (
	"context"
	"fmt"

	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

func (u *user) domainsCmd() *cobra.Command {
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
		Use: "ls", Short: "list the project's custom domains", Args: args(0, 0),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, _ []string) error {
			ds, err := all(func(cursor *string) (*[]client.Domain, string, error) {
				limit := pageSize
				res, err := c.ListDomainsWithResponse(ctx, p.Id.String(), &client.ListDomainsParams{Cursor: cursor, Limit: &limit})
				if err := check(res, err); err != nil {
					return nil, "", err
				}
				return res.JSON200.Items, res.JSON200.NextCursor, nil
			})
			if err != nil {
				return err
			}
			if u.json {
				return u.printJSON(orEmpty(ds))
			}
			rows := make([][]string, 0, len(ds))
			for _, d := range ds {
				rows = append(rows, []string{d.Name, u.status(string(d.Status)), d.Reason})
			}
			u.table(fmt.Sprintf("%s has no custom domains.", p.Slug), []string{"DOMAIN", "STATUS", "REASON"}, rows)
			return nil
		}),
	}
	var move bool
	add := &cobra.Command{
		Use: "add <domain>", Short: "add a custom domain and print the DNS record to create", Args: args(1, 1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			body := client.AddDomainInputBody{Name: a[0]}
			if move {
				body.Move = &move
			}
			res, err := c.AddDomainWithResponse(ctx, p.Id.String(), body)
			if err := check(res, err); err != nil {
				return err
			}
			d := *res.JSON201
			u.printf("Added %s to %s.\n", d.Name, p.Slug)
			u.printDomain(d)
			return u.jsonResult(d)
		}),
	}
	add.Flags().BoolVar(&move, "move", false, "take the domain over from another project of yours")
	verify := &cobra.Command{
		Use: "verify <domain>", Short: "check the domain's DNS now", Args: args(1, 1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			res, err := c.VerifyDomainWithResponse(ctx, p.Id.String(), a[0])
			if err := check(res, err); err != nil {
				return err
			}
			d := *res.JSON200
			u.printDomain(d)
			return u.jsonResult(d)
		}),
	}
	rm := &cobra.Command{
		Use: "rm <domain>", Short: "remove a custom domain", Args: args(1, 1),
		RunE: withProject(func(ctx context.Context, c *client.ClientWithResponses, p client.Project, a []string) error {
			res, err := c.DeleteDomainWithResponse(ctx, p.Id.String(), a[0])
			if err := check(res, err); err != nil {
				return err
			}
			u.printf("Removed %s from %s.\n", a[0], p.Slug)
			return u.jsonResult(map[string]any{"removed": a[0]})
		}),
	}
	for _, c := range []*cobra.Command{ls, add, verify, rm} {
		u.projectFlag(c)
	}
	return groupCmd("domains", "manage the project's custom domains", ls, add, verify, rm)
}

// printDomain says where a domain stands and, until it is verified, the
// DNS records that would verify it.
func (u *user) printDomain(d client.Domain) {
	if u.json {
		return
	}
	line := fmt.Sprintf("%s: %s", d.Name, u.status(string(d.Status)))
	if d.Reason != "" {
		line += " (" + d.Reason + ")"
	}
	fmt.Fprintln(u.env.Stdout, line)
	if d.Status == client.DomainStatusVerified || d.DnsRecords == nil || len(*d.DnsRecords) == 0 {
		return
	}
	fmt.Fprintln(u.env.Stdout, "\nCreate this DNS record at your DNS provider, then run `zeitwork domains verify "+d.Name+"`:")
	rows := make([][]string, 0, len(*d.DnsRecords))
	for _, r := range *d.DnsRecords {
		rows = append(rows, []string{string(r.Type), r.Name, r.Value, r.Purpose})
	}
	u.table("", []string{"TYPE", "NAME", "VALUE", "PURPOSE"}, rows)
}
