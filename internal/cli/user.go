package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/zeitwork/zeitwork/internal/client"
	"github.com/zeitwork/zeitwork/internal/devenv"
)

// The user commands (login, projects, env, ...) are a cobra tree talking
// to the public API through internal/client. Main dispatches to them like
// to the roles; they add two exit codes of their own.
const (
	ExitNotSignedIn = 4 // no token, or the API refused it: run `zeitwork login`
	ExitNotFound    = 5 // the project, deployment, domain or variable does not exist (or is not yours)
)

// DefaultAPIURL is where `zeitwork dev` serves the API (DEV_PORT_BASE-20),
// used when neither --api, ZEITWORK_API_URL nor a login says otherwise.
const DefaultAPIURL = "http://127.0.0.1:28080"

// codedError carries an exit code of the user commands.
type codedError struct {
	code int
	err  error
}

func (e codedError) Error() string { return e.err.Error() }
func (e codedError) Unwrap() error { return e.err }

var errNotSignedIn = codedError{ExitNotSignedIn, errors.New("not signed in: run `zeitwork login`")}

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// apiError gives an API refusal its exit code: 401 is "not signed in",
// 404 "not found", 400 and 422 a usage error (the input was refused,
// nothing was done); anything else is a failure.
func apiError(err error) error {
	var e *client.Error
	if !errors.As(err, &e) {
		return err
	}
	switch e.Status {
	case http.StatusUnauthorized:
		return codedError{ExitNotSignedIn, fmt.Errorf("%w; run `zeitwork login`", err)}
	case http.StatusNotFound:
		return codedError{ExitNotFound, err}
	case http.StatusBadRequest, http.StatusUnprocessableEntity:
		return usageError{err}
	}
	return err
}

// check is client.Check with apiError's exit codes.
func check(res client.Response, err error) error { return apiError(client.Check(res, err)) }

// userCommand runs the cobra command name with args.
func userCommand(name string) func(context.Context, Env, []string) error {
	return func(ctx context.Context, env Env, args []string) error {
		u := &user{env: env}
		root := u.root()
		root.SetArgs(append([]string{name}, args...))
		return root.ExecuteContext(ctx)
	}
}

// user is one invocation of a user command: its outside world and the
// global flags.
type user struct {
	env     Env
	api     string // --api
	json    bool   // --json
	dir     string // -C
	project string // --project
	// logOut gets log lines: stdout for logs, stderr while deploy waits
	// (its stdout is the URL).
	logOut io.Writer
	// lineHook, when set, takes the log lines instead of printing them:
	// deploy's progress display on a terminal.
	lineHook func(client.LogLine)
	// owner, set by dev run through sudo, is whose config directory
	// holds the login (and who owns it); nil: this process's user.
	owner *devenv.LoginOwner
}

func (u *user) root() *cobra.Command {
	root := &cobra.Command{
		Use:           "zeitwork",
		SilenceErrors: true, // Main prints them, with the command's name
		SilenceUsage:  true,
	}
	root.SetOut(u.env.Stdout)
	root.SetErr(u.env.Stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	root.PersistentFlags().StringVar(&u.api, "api", "", "the API's URL (default: $ZEITWORK_API_URL, then the one you logged in to, then "+DefaultAPIURL+")")
	root.PersistentFlags().BoolVar(&u.json, "json", false, "print JSON instead of text")
	root.PersistentFlags().StringVarP(&u.dir, "cwd", "C", "", "run as if in this directory (default: the current one)")
	root.AddCommand(u.loginCmd(), u.logoutCmd(), u.whoamiCmd(),
		u.projectsCmd(), u.linkCmd(), u.openCmd(),
		u.deploymentsCmd(), u.rollbackCmd(),
		u.envCmd(), u.domainsCmd(),
		u.deployCmd(), u.logsCmd(), u.adminCmd())
	return root
}

// args checks a command's positional arguments, as a usage error.
func args(min, max int) cobra.PositionalArgs {
	return func(cmd *cobra.Command, a []string) error {
		switch {
		case len(a) < min:
			return usagef("%s: missing arguments; usage: %s", cmd.Name(), cmd.UseLine())
		case max >= 0 && len(a) > max:
			return usagef("%s: too many arguments; usage: %s", cmd.Name(), cmd.UseLine())
		}
		return nil
	}
}

// groupCmd is a command that only holds subcommands: without one, or with
// an unknown one, it is a usage error.
func groupCmd(use, short string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use: use, Short: short, Args: cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, a []string) error {
			names := make([]string, 0, len(subs))
			for _, s := range subs {
				names = append(names, s.Name())
			}
			if len(a) == 0 {
				return usagef("%s needs a subcommand: %s", cmd.Name(), strings.Join(names, ", "))
			}
			return usagef("%s: unknown subcommand %q; one of: %s", cmd.Name(), a[0], strings.Join(names, ", "))
		},
	}
	c.AddCommand(subs...)
	return c
}

func (u *user) vars() map[string]string { return u.env.vars() }

// cwd is -C, or the process's directory.
func (u *user) cwd() (string, error) {
	if u.dir != "" {
		return u.dir, nil
	}
	return os.Getwd()
}

// apiURL is --api, ZEITWORK_API_URL, the URL of the saved login, or the
// dev default, in that order.
func (u *user) apiURL(creds savedLogin) string {
	switch {
	case u.api != "":
		return u.api
	case u.vars()["ZEITWORK_API_URL"] != "":
		return u.vars()["ZEITWORK_API_URL"]
	case creds.APIURL != "":
		return creds.APIURL
	}
	return DefaultAPIURL
}

func (u *user) http() *http.Client {
	// No overall timeout: an upload or a followed log lasts as long as it
	// needs. An API that accepts a request and then says nothing fails.
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.ResponseHeaderTimeout = time.Minute
	return &http.Client{Transport: t}
}

// anonymous is a client without a token.
func (u *user) anonymous() (*client.ClientWithResponses, string, error) {
	creds, err := u.loadCredentials()
	if err != nil {
		return nil, "", err
	}
	url := u.apiURL(creds)
	c, err := client.NewAPI(url, "", u.http())
	if err != nil {
		return nil, "", usagef("API URL %q: %w", url, err)
	}
	return c, url, nil
}

// signedIn is a client with the saved token (or ZEITWORK_TOKEN's).
func (u *user) signedIn() (*client.ClientWithResponses, error) {
	creds, err := u.loadCredentials()
	if err != nil {
		return nil, err
	}
	token := creds.Token
	if t := u.vars()["ZEITWORK_TOKEN"]; t != "" {
		token = t
	}
	if token == "" {
		return nil, errNotSignedIn
	}
	url := u.apiURL(creds)
	c, err := client.NewAPI(url, token, u.http())
	if err != nil {
		return nil, usagef("API URL %q: %w", url, err)
	}
	return c, nil
}

// userCommands are the user commands as Main lists and dispatches them.
func userCommands() []command {
	root := (&user{}).root()
	var cs []command
	for _, c := range root.Commands() {
		if c.Hidden || c.Name() == "help" || c.Name() == "completion" {
			continue
		}
		cs = append(cs, command{c.Name(), "client", c.Short, userCommand(c.Name())})
	}
	return cs
}
