package bootstrap

import (
	"context"
	"errors"
	"fmt"
	"io"
)

// ErrNotBuilt is a step bootstrap can check but not yet carry out.
var ErrNotBuilt = errors.New("not built yet")

// ErrMissing is a file a step needs that is not on the machine, and that
// cluster.yaml does not say where to install from. It is also ErrNotBuilt
// (the command's exit code 3): bootstrap checks it but cannot carry it out.
var ErrMissing = errors.New("missing")

// missingError is ErrMissing with what to do.
type missingError struct{ msg string }

func (e missingError) Error() string { return ErrMissing.Error() + ": " + e.msg }

func (e missingError) Is(target error) bool { return target == ErrMissing || target == ErrNotBuilt }

// ErrPreflight: a check that must pass before anything changes did not.
var ErrPreflight = errors.New("preflight failed: nothing was changed")

// Step is one thing bootstrap makes true. Check says whether it already
// is; Apply makes it so and must be safe to repeat, because a run that is
// killed between the two starts the step again.
type Step struct {
	Name  string
	Check func(ctx context.Context) (Status, error)
	// Apply is nil for a check only: a preflight step, which stops the run
	// before any step changes anything when it is not satisfied.
	Apply func(ctx context.Context) error
}

// Status is what a Check found.
type Status struct {
	Done   bool
	Detail string // what is there, or what would change
}

// Result counts what a run did.
type Result struct {
	Steps, Done, Applied, Todo, Unknown int
}

// Runner runs steps in order and prints each with its outcome.
type Runner struct {
	Out    io.Writer
	DryRun bool
}

// Preflight checks every step (all of them, so that one run reports every
// problem) and fails if any is not done.
func (r Runner) Preflight(ctx context.Context, steps []Step) error {
	var failed int
	for _, s := range steps {
		st, err := s.Check(ctx)
		switch {
		case err != nil:
			failed++
			r.line("failed", s.Name, err.Error())
		case !st.Done:
			failed++
			r.line("failed", s.Name, st.Detail)
		default:
			r.line("ok", s.Name, st.Detail)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%w (%d of %d checks)", ErrPreflight, failed, len(steps))
	}
	return nil
}

// Run checks each step and applies those not done (a dry run only
// reports them). Apply is confirmed by checking again: a step that says it
// worked but did not is an error, not a silent success.
func (r Runner) Run(ctx context.Context, steps []Step) (Result, error) {
	res := Result{Steps: len(steps)}
	for _, s := range steps {
		st, err := s.Check(ctx)
		if err != nil {
			if r.DryRun {
				res.Unknown++
				r.line("unknown", s.Name, err.Error())
				continue
			}
			r.line("failed", s.Name, err.Error())
			return res, fmt.Errorf("%s: %w", s.Name, err)
		}
		if st.Done {
			res.Done++
			r.line("done", s.Name, st.Detail)
			continue
		}
		if r.DryRun || s.Apply == nil {
			res.Todo++
			r.line("todo", s.Name, st.Detail)
			if s.Apply == nil && !r.DryRun {
				return res, fmt.Errorf("%s: %s", s.Name, st.Detail)
			}
			continue
		}
		// Said before, too: applying may take minutes (packages, waits).
		r.line("apply", s.Name, st.Detail)
		if err := s.Apply(ctx); err != nil {
			res.Todo++
			r.line("failed", s.Name, err.Error())
			return res, fmt.Errorf("%s: %w", s.Name, err)
		}
		after, err := s.Check(ctx)
		if err == nil && !after.Done {
			err = fmt.Errorf("applied, but its check still says: %s", after.Detail)
		}
		if err != nil {
			r.line("failed", s.Name, err.Error())
			return res, fmt.Errorf("%s: %w", s.Name, err)
		}
		res.Applied++
		r.line("applied", s.Name, after.Detail)
	}
	return res, nil
}

func (r Runner) line(state, name, detail string) {
	if detail == "" {
		fmt.Fprintf(r.Out, "  [%s] %s\n", state, name)
		return
	}
	fmt.Fprintf(r.Out, "  [%s] %s: %s\n", state, name, detail)
}

// Summary is the last line of a run.
func (res Result) Summary(dryRun bool) string {
	switch {
	case dryRun && res.Todo == 0 && res.Unknown == 0:
		return fmt.Sprintf("nothing to change: all %d steps are done", res.Steps)
	case dryRun:
		return fmt.Sprintf("dry run: %d of %d steps would change something, %d could not be checked; nothing was changed", res.Todo, res.Steps, res.Unknown)
	case res.Applied == 0:
		return fmt.Sprintf("nothing changed: all %d steps were already done", res.Steps)
	default:
		return fmt.Sprintf("applied %d of %d steps; %d were already done", res.Applied, res.Steps, res.Done)
	}
}
