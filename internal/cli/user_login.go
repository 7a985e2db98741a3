package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
)

func (u *user) loginCmd() *cobra.Command {
	var token, name string
	c := &cobra.Command{
		Use:   "login",
		Short: "sign in to a Zeitwork API",
		Long: "Signs in by approving a code in the browser (a device sign-in): the command prints a URL and a code,\n" +
			"opens the browser when there is a display, and waits for the approval. For scripts, --token saves an\n" +
			"API token (zw_…) instead. The login is kept in $XDG_CONFIG_HOME/zeitwork/credentials.json (mode 0600).",
		Args: args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			if token != "" {
				return u.loginToken(cmd.Context(), token)
			}
			return u.loginDevice(cmd.Context(), name)
		},
	}
	c.Flags().StringVar(&token, "token", "", "an API token (zw_…) to use instead of signing in in a browser")
	c.Flags().StringVar(&name, "name", "", "what to call this device's token (default: zeitwork CLI on <host name>)")
	return c
}

// loginResult is what login prints with --json.
type loginResult struct {
	User   client.User `json:"user"`
	APIURL string      `json:"api_url"`
	Config string      `json:"config"`
}

func (u *user) loginToken(ctx context.Context, token string) error {
	_, url, err := u.anonymous()
	if err != nil {
		return err
	}
	c, err := client.NewAPI(url, token, u.http())
	if err != nil {
		return usagef("API URL %q: %w", url, err)
	}
	me, err := c.GetMeWithResponse(ctx)
	if err := check(me, err); err != nil {
		return err
	}
	return u.finishLogin(savedLogin{APIURL: url, Token: token}, *me.JSON200)
}

func (u *user) loginDevice(ctx context.Context, name string) error {
	anon, url, err := u.anonymous()
	if err != nil {
		return err
	}
	if name == "" {
		host, _ := os.Hostname() // a name for a person to recognise; empty is fine
		name = "zeitwork CLI"
		if host != "" {
			name += " on " + host
		}
	}
	start, err := anon.StartDeviceSignInWithResponse(ctx, client.StartDeviceInputBody{ClientName: name})
	if err := check(start, err); err != nil {
		return err
	}
	s := start.JSON200
	// The prompt goes to stderr: stdout is the result, JSON with --json.
	fmt.Fprintf(u.env.Stderr, "To sign in, open %s\nand enter the code %s\n", s.VerificationUri, s.UserCode)
	if u.openBrowser(s.VerificationUriComplete) {
		fmt.Fprintln(u.env.Stderr, "(opened in your browser)")
	}
	fmt.Fprintln(u.env.Stderr, "Waiting for the approval…")

	interval := time.Duration(max(s.Interval, 1)) * time.Second
	ctx, cancel := context.WithTimeout(ctx, time.Duration(s.ExpiresIn)*time.Second)
	defer cancel()
	for {
		select {
		case <-ctx.Done():
			if errors.Is(ctx.Err(), context.DeadlineExceeded) {
				return errors.New("the code expired before it was approved; run `zeitwork login` again")
			}
			return ctx.Err()
		case <-time.After(interval):
		}
		poll, err := anon.PollDeviceSignInWithResponse(ctx, client.PollDeviceInputBody{DeviceCode: s.DeviceCode})
		if err != nil && ctx.Err() != nil {
			continue // the deadline or Ctrl-C: said above
		}
		err = client.Check(poll, err)
		var e *client.Error
		switch {
		case err == nil:
			t := poll.JSON200
			me, err := client.NewAPI(url, t.AccessToken, u.http())
			if err != nil {
				return err
			}
			who, err := me.GetMeWithResponse(ctx)
			if err := check(who, err); err != nil {
				return err
			}
			return u.finishLogin(savedLogin{APIURL: url, Token: t.AccessToken, TokenID: t.Id.String()}, *who.JSON200)
		case errors.As(err, &e) && e.Code == string(client.AuthorizationPending):
		case errors.As(err, &e) && e.Code == string(client.SlowDown):
			interval += 5 * time.Second // RFC 8628 §3.5
		case errors.As(err, &e) && e.Code == string(client.AccessDenied):
			return errors.New("the sign-in was denied")
		case errors.As(err, &e) && e.Code == string(client.ExpiredToken):
			return errors.New("the code expired; run `zeitwork login` again")
		default:
			return apiError(err)
		}
	}
}

func (u *user) finishLogin(c savedLogin, me client.User) error {
	path, err := u.saveCredentials(c)
	if err != nil {
		return err
	}
	if u.json {
		return u.printJSON(loginResult{User: me, APIURL: c.APIURL, Config: path})
	}
	u.printf("Signed in to %s as %s.\n", c.APIURL, me.Username)
	return nil
}

func (u *user) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "sign out: revoke the token login made and forget it",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			creds, err := u.loadCredentials()
			if err != nil {
				return err
			}
			path, err := u.credentialsPath()
			if err != nil {
				return err
			}
			if creds.Token == "" {
				u.printf("Not signed in.\n")
				return u.jsonResult(map[string]any{"signed_out": false})
			}
			// A token given with --token may serve elsewhere: only the one
			// login minted for this device is revoked.
			var revokeErr error
			if creds.TokenID != "" {
				c, err := client.NewAPI(u.apiURL(creds), creds.Token, u.http())
				if err == nil {
					res, rerr := c.RevokeTokenWithResponse(cmd.Context(), creds.TokenID)
					revokeErr = check(res, rerr)
				} else {
					revokeErr = err
				}
				// Already revoked or signed out elsewhere: the goal is reached.
				var coded codedError
				if errors.As(revokeErr, &coded) && (coded.code == ExitNotSignedIn || coded.code == ExitNotFound) {
					revokeErr = nil
				}
			}
			if err := os.Remove(path); err != nil && !os.IsNotExist(err) {
				return fmt.Errorf("forget the login: %w", err)
			}
			if revokeErr != nil {
				return fmt.Errorf("signed out on this machine, but the token could not be revoked (revoke it in the dashboard): %w", revokeErr)
			}
			u.printf("Signed out of %s.\n", u.apiURL(creds))
			return u.jsonResult(map[string]any{"signed_out": true, "revoked": creds.TokenID != ""})
		},
	}
}

// jsonResult prints v with --json, nothing otherwise.
func (u *user) jsonResult(v any) error {
	if u.json {
		return u.printJSON(v)
	}
	return nil
}

func (u *user) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "whoami",
		Short: "who you are signed in as, and where",
		Args:  args(0, 0),
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := u.signedIn()
			if err != nil {
				return err
			}
			me, err := c.GetMeWithResponse(cmd.Context())
			if err := check(me, err); err != nil {
				return err
			}
			if u.json {
				return u.printJSON(me.JSON200)
			}
			creds, _ := u.loadCredentials() // read once already
			u.printf("%s (%s) at %s\n", me.JSON200.Username, me.JSON200.Email, u.apiURL(creds))
			return nil
		},
	}
}
