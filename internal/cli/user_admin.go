package cli

import (
	"fmt"
	"strings"

	"github.com/samber/lo"
	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

// adminCmd is what an installation's admins do from the terminal: see who
// waits for admission, and let them in.
func (u *user) adminCmd() *cobra.Command {
	c := &cobra.Command{
		Use:   "admin",
		Short: "run the installation (admins): the waitlist, admitting users",
	}
	c.AddCommand(&cobra.Command{
		Use:   "waitlist",
		Short: "users waiting for admission, and addresses left on the waitlist",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			res, err := c.ListWaitlistWithResponse(cmd.Context())
			if err := check(res, err); err != nil {
				return err
			}
			if u.json {
				return u.printJSON(res.JSON200)
			}
			var rows [][]string
			for _, w := range lo.FromPtr(res.JSON200.Users) {
				rows = append(rows, []string{w.Username, w.Email, "signed in, waiting", w.Id.String(), w.CreatedAt.Format("2006-01-02 15:04")})
			}
			for _, w := range lo.FromPtr(res.JSON200.Emails) {
				rows = append(rows, []string{"", w.Email, "left an address", "", w.CreatedAt.Format("2006-01-02 15:04")})
			}
			u.table("Nobody is waiting.", []string{"USER", "EMAIL", "STATE", "ID", "SINCE"}, rows)
			return nil
		},
	})
	c.AddCommand(&cobra.Command{
		Use:   "admit <user>",
		Short: "admit a waiting user, by GitHub login or id",
		Args:  args(1, 1),
		RunE: func(cmd *cobra.Command, a []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			res, err := c.ListWaitlistWithResponse(cmd.Context())
			if err := check(res, err); err != nil {
				return err
			}
			var who *client.User
			for _, w := range lo.FromPtr(res.JSON200.Users) {
				if strings.EqualFold(w.Username, a[0]) || w.Id.String() == strings.ToLower(a[0]) {
					who = &w
					break
				}
			}
			if who == nil {
				return codedError{ExitNotFound, fmt.Errorf("nobody called %q is waiting for admission", a[0])}
			}
			admitted, err := c.AdmitUserWithResponse(cmd.Context(), who.Id.String())
			if err := check(admitted, err); err != nil {
				return err
			}
			if u.json {
				return u.printJSON(map[string]any{"admitted": who.Id, "username": who.Username})
			}
			u.printf("Admitted %s (%s).\n", who.Username, who.Email)
			return nil
		},
	})
	return c
}
