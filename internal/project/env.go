package project

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/secret"
)

var (
	// ErrNoVariable: the project has no variable of that name.
	ErrNoVariable = errors.New("no such variable")
	// ErrNoKeys: no key ring is configured, so values can be neither
	// encrypted nor revealed.
	ErrNoKeys = errors.New("variables are not configured")
)

// Limits on a variable. Values live in the instance's environment, where
// the kernel caps the whole block; 64 KiB each leaves room for many.
const (
	MaxVariableName  = 255
	MaxVariableValue = 64 << 10
)

// reserved are the names the platform sets itself: the runtime overwrites
// PORT with the project's port, so a variable of that name would never be
// seen by the app.
var reserved = map[string]bool{"PORT": true}

// variableNameRe is the schema's check (environment_variables_name_check):
// a POSIX shell variable name.
var variableNameRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)

// ValidVariableName says why name cannot be a variable's name; the
// message quotes the name, never a value.
func ValidVariableName(name string) error {
	switch {
	case len(name) > MaxVariableName:
		return fmt.Errorf("%w: a variable name has at most %d characters", ErrInvalid, MaxVariableName)
	case !variableNameRe.MatchString(name):
		return fmt.Errorf("%w: %q is not a variable name: letters, digits and _, not starting with a digit", ErrInvalid, name)
	case reserved[name]:
		return fmt.Errorf("%w: %s is set by the platform", ErrInvalid, name)
	}
	return nil
}

// VariableEnvironments checks the deployment environments a variable is
// given to and returns them in deployment.Environments' order, so that
// every reader sees the same list for the same set. nil means "not said"
// and stays nil; an empty list is refused, since a variable no deployment
// gets is a mistake, not a way to park a value.
func VariableEnvironments(envs []deployment.Environment) ([]deployment.Environment, error) {
	if envs == nil {
		return nil, nil
	}
	if len(envs) == 0 {
		return nil, fmt.Errorf("%w: a variable goes to at least one environment: production, preview", ErrInvalid)
	}
	seen := map[deployment.Environment]bool{}
	for _, e := range envs {
		if !slices.Contains(deployment.Environments, e) {
			return nil, fmt.Errorf("%w: %q is not an environment: production or preview", ErrInvalid, e)
		}
		if seen[e] {
			return nil, fmt.Errorf("%w: environment %s is given twice", ErrInvalid, e)
		}
		seen[e] = true
	}
	out := make([]deployment.Environment, 0, len(envs))
	for _, e := range deployment.Environments {
		if seen[e] {
			out = append(out, e)
		}
	}
	return out, nil
}

// Variable is a project's environment variable without its value.
type Variable struct {
	ID   uuid.UUID
	Name string
	// Environments are the deployments' environments whose instances get
	// the variable: a preview runs any branch anyone can push, so a
	// production secret is kept from it by leaving preview out.
	Environments []deployment.Environment
	CreatedAt    time.Time
	UpdatedAt    time.Time
}

func variableFromRow(r db.EnvironmentVariable) Variable {
	envs := make([]deployment.Environment, len(r.Environments))
	for i, e := range r.Environments {
		envs[i] = deployment.Environment(e)
	}
	return Variable{ID: r.ID, Name: r.Name, Environments: envs, CreatedAt: r.CreatedAt, UpdatedAt: r.UpdatedAt}
}

// Variables reads and writes projects' variables on behalf of a member.
// Values are sealed with Keys bound to their project and name
// (secret.EnvContext), which is how node agents open them.
type Variables struct {
	DB db.Conn
	// Keys is nil when none are configured: every call is ErrNoKeys.
	Keys *secret.Ring
}

// member fails with ErrNotFound unless user may see the project.
func (v Variables) member(ctx context.Context, user, project uuid.UUID) error {
	if v.Keys == nil {
		return ErrNoKeys
	}
	_, err := Store{DB: v.DB}.Get(ctx, user, project)
	return err
}

// List returns up to limit of the project's variables with ids after
// after, oldest first.
func (v Variables) List(ctx context.Context, user, project, after uuid.UUID, limit int32) ([]Variable, error) {
	if err := v.member(ctx, user, project); err != nil {
		return nil, err
	}
	rows, err := db.New(v.DB).EnvironmentVariablePage(ctx, db.EnvironmentVariablePageParams{ProjectID: project, After: after, MaxRows: limit})
	if err != nil {
		return nil, fmt.Errorf("variables of %s: %w", project, err)
	}
	out := make([]Variable, len(rows))
	for i, r := range rows {
		out[i] = variableFromRow(r)
	}
	return out, nil
}

// Set creates or replaces a variable. Instances started from now on see
// the new value; running ones keep theirs until replaced.
//
// envs are the environments whose instances get it. nil keeps an existing
// variable's and gives a new one both, production and preview: a client
// that only changes a value does not silently widen or narrow who sees it.
func (v Variables) Set(ctx context.Context, user, project uuid.UUID, name, value string, envs []deployment.Environment) (Variable, error) {
	if err := ValidVariableName(name); err != nil {
		return Variable{}, err
	}
	if len(value) > MaxVariableValue {
		return Variable{}, fmt.Errorf("%w: a value has at most %d bytes", ErrInvalid, MaxVariableValue)
	}
	envs, err := VariableEnvironments(envs)
	if err != nil {
		return Variable{}, err
	}
	var stored []string
	if envs != nil {
		stored = make([]string, len(envs))
		for i, e := range envs {
			stored[i] = string(e)
		}
	}
	if err := v.member(ctx, user, project); err != nil {
		return Variable{}, err
	}
	ct, kid := v.Keys.Seal([]byte(value), secret.EnvContext(project, name))
	row, err := db.New(v.DB).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{
		ID: id.New(), ProjectID: project, Name: name, ValueCiphertext: ct, KeyID: kid, Environments: stored,
	})
	if err != nil {
		return Variable{}, fmt.Errorf("set variable %s of %s: %w", name, project, err)
	}
	return variableFromRow(row), nil
}

// Reveal returns a variable's value.
func (v Variables) Reveal(ctx context.Context, user, project uuid.UUID, name string) (Variable, string, error) {
	if err := v.member(ctx, user, project); err != nil {
		return Variable{}, "", err
	}
	row, err := db.New(v.DB).EnvironmentVariableGet(ctx, db.EnvironmentVariableGetParams{ProjectID: project, Name: name})
	if errors.Is(err, pgx.ErrNoRows) {
		return Variable{}, "", fmt.Errorf("%w: %s", ErrNoVariable, name)
	}
	if err != nil {
		return Variable{}, "", fmt.Errorf("variable %s of %s: %w", name, project, err)
	}
	plain, err := v.Keys.Open(row.ValueCiphertext, row.KeyID, secret.EnvContext(project, name))
	if err != nil {
		return Variable{}, "", fmt.Errorf("variable %s of %s: %w", name, project, err)
	}
	return variableFromRow(row), string(plain), nil
}

// Delete removes a variable.
func (v Variables) Delete(ctx context.Context, user, project uuid.UUID, name string) error {
	if err := v.member(ctx, user, project); err != nil {
		return err
	}
	n, err := db.New(v.DB).EnvironmentVariableDelete(ctx, db.EnvironmentVariableDeleteParams{ProjectID: project, Name: name})
	if err != nil {
		return fmt.Errorf("delete variable %s of %s: %w", name, project, err)
	}
	if n == 0 {
		return fmt.Errorf("%w: %s", ErrNoVariable, name)
	}
	return nil
}
