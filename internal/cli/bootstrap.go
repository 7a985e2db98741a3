package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/zeitwork/zeitwork/internal/bootstrap"
)

func runBootstrap(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("bootstrap", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	file := fs.String("f", "cluster.yaml", "the cluster file")
	dry := fs.Bool("dry-run", false, "print the plan; change nothing")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (usage: zeitwork bootstrap [--dry-run] [-f cluster.yaml])", err)}
	}
	if fs.NArg() > 0 {
		return usageError{fmt.Errorf("unexpected argument %q (usage: zeitwork bootstrap [--dry-run] [-f cluster.yaml])", fs.Arg(0))}
	}
	c, err := bootstrap.Load(*file)
	if err != nil {
		return usageError{err}
	}
	b := &bootstrap.Bootstrap{Cluster: c, Env: env.vars(), Out: env.Stdout, DryRun: *dry}
	_, err = b.Run(ctx)
	if errors.Is(err, bootstrap.ErrNotBuilt) {
		return bootstrapNotBuilt{err}
	}
	return err
}

// bootstrapNotBuilt is a run that stopped at a step bootstrap cannot
// carry out yet: the steps before it are done.
type bootstrapNotBuilt struct{ error }

func (bootstrapNotBuilt) Is(target error) bool { return target == errNotBuilt }
