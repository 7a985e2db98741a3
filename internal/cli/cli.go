// Package cli is the zeitwork command line: it picks the role or client
// command named on the command line, parses its configuration, and runs it.
// It owns exit codes and the wording of errors a person reads; the roles
// themselves live in their own packages.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/version"
)

// Exit codes.
const (
	ExitOK       = 0
	ExitFailure  = 1 // the command ran and failed
	ExitUsage    = 2 // bad arguments or configuration: nothing was done
	ExitNotBuilt = 3 // the command exists but a step it needs is not built yet
)

// Env is the process's outside world, passed in so tests can run commands
// in-process with their own variables and output.
type Env struct {
	Environ []string
	Stdout  io.Writer
	Stderr  io.Writer
}

func (e Env) vars() map[string]string { return config.Environ(e.Environ) }

type command struct {
	name    string
	group   string // "role" or "client"
	summary string
	run     func(ctx context.Context, env Env, args []string) error
}

func commands() []command {
	return append([]command{
		{"api", "role", "public API (/v1) and dashboard", runAPI},
		{"operator", "role", "scheduler, deployment lifecycle, management API", runOperator},
		{"nodeagent", "role", "runs instances on a worker node, node-proxy", runNodeAgent},
		{"builder", "role", "builds images from source with BuildKit", runBuilder},
		{"edge", "role", "TLS edge proxy routing hosts to instances", runEdge},
		{"migrate", "role", "apply the database migrations (idempotent)", runMigrate},
		{"secrets", "role", "rotate: re-encrypt variables and certificate keys under the newest key", runSecrets},
		{"dev", "role", "the whole platform on this machine", runDev},
		{"bootstrap", "role", "provision or recover a cluster over SSH (-f cluster.yaml, --dry-run)", runBootstrap},
		{"backup", "role", "back up the database with pgBackRest into S3 (--type, --setup, --list)", runBackup},
		{"restore", "role", "restore a backup into a new data directory (--to, --time)", runRestore},
	}, append(userCommands(), command{"version", "client", "print the version", runVersion})...)
}

// usageError is a mistake on the command line or in the configuration.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

// errNotBuilt marks a step of a command that exists but does nothing yet
// (bootstrap's installers that are not built).
var errNotBuilt = errors.New("not built yet")

// Main runs the command named by args[0] and returns the exit code.
func Main(ctx context.Context, args []string, env Env) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		usage(env.Stdout)
		return ExitOK
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, env, args[1:])
		switch {
		case err == nil:
			return ExitOK
		case errors.Is(err, errNotBuilt):
			fmt.Fprintf(env.Stderr, "zeitwork %s: %v\n", c.name, err)
			return ExitNotBuilt
		case errors.As(err, new(usageError)), errors.As(err, new(*config.Error)):
			fmt.Fprintf(env.Stderr, "zeitwork %s: %v\n", c.name, err)
			return ExitUsage
		case errors.As(err, new(codedError)):
			fmt.Fprintf(env.Stderr, "zeitwork %s: %v\n", c.name, err)
			var coded codedError
			errors.As(err, &coded)
			return coded.code
		default:
			fmt.Fprintf(env.Stderr, "zeitwork %s: %v\n", c.name, err)
			return ExitFailure
		}
	}
	fmt.Fprintf(env.Stderr, "zeitwork: unknown command %q; see `zeitwork help`\n", args[0])
	return ExitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: zeitwork <command> [flags]")
	for _, group := range []string{"role", "client"} {
		title := map[string]string{"role": "\nRoles (servers; configured by environment variables):", "client": "\nClient commands:"}[group]
		fmt.Fprintln(w, title)
		for _, c := range commands() {
			if c.group == group {
				fmt.Fprintf(w, "  %-12s %s\n", c.name, c.summary)
			}
		}
	}
}

func runVersion(_ context.Context, env Env, _ []string) error {
	fmt.Fprintln(env.Stdout, "zeitwork", version.Version)
	return nil
}
