package nodeagent_test

import (
	"bytes"
	"context"
	"log/slog"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/instance"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// TestFakeVariablesFollowTheDeploymentsEnvironment: an instance gets only
// the variables meant for its deployment's environment, so a preview (any
// pushed branch) never runs with a production-only secret.
func TestFakeVariablesFollowTheDeploymentsEnvironment(t *testing.T) {
	h := newHarness(t)
	logs := &bytes.Buffer{}
	h.c.Log = slog.New(slog.NewJSONHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	ctx := context.Background()
	preview := id.New()
	if _, err := h.pool.Exec(ctx, `INSERT INTO deployments (id, project_id, status, source_type, source_archive_key, replicas, image_id, environment)
		SELECT $1, project_id, 'deploying', 'upload', 'k2', 3, image_id, 'preview' FROM deployments WHERE id = $2`, preview, h.deploy); err != nil {
		t.Fatal(err)
	}
	for _, v := range []struct {
		name string
		envs []string // nil: the default, both
	}{
		{"SHARED", nil},
		{"PROD_SECRET", []string{"production"}},
		{"PREVIEW_ONLY", []string{"preview"}},
		{"BOTH", []string{"production", "preview"}},
	} {
		ct, kid := h.ring.Seal([]byte("value-of-"+v.name), secret.EnvContext(h.project, v.name))
		if _, err := db.New(h.pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{
			ID: id.New(), ProjectID: h.project, Name: v.name, ValueCiphertext: ct, KeyID: kid, Environments: v.envs,
		}); err != nil {
			t.Fatal(err)
		}
	}
	prod := h.instance(t)
	prev, err := instance.Store{DB: h.pool}.Create(ctx, h.node, instance.New{DeploymentID: preview, Port: 8080, CPUMillis: 250, MemoryMB: 256})
	if err != nil {
		t.Fatal(err)
	}
	h.pass(t)

	for _, c := range []struct {
		in   instance.Instance
		want []string
	}{
		{prod, []string{"BOTH", "PROD_SECRET", "SHARED"}},
		{prev, []string{"BOTH", "PREVIEW_ONLY", "SHARED"}},
	} {
		if got := h.state(t, c.in); got.State != instance.StateStarting {
			t.Fatalf("%s: %s %s", c.in.ID, got.State, got.StateReason)
		}
		env := h.rt.specs[c.in.ID].Env
		if len(env) != len(c.want) {
			t.Fatalf("deployment %s got %v, want exactly %v", c.in.DeploymentID, env, c.want)
		}
		for _, n := range c.want {
			if env[n] != "value-of-"+n {
				t.Fatalf("deployment %s: %s = %q in %v", c.in.DeploymentID, n, env[n], env)
			}
		}
	}
	if strings.Contains(logs.String(), "value-of-") {
		t.Fatalf("a value reached the agent's log: %s", logs.String())
	}
}

// TestFakeNoControlPlaneNoVariables: an agent without a control plane
// (no OPERATOR_URL) holds no key either, so an instance with variables
// fails with a reason that says what is missing, and one without runs.
func TestFakeNoControlPlaneNoVariables(t *testing.T) {
	h := newHarness(t)
	h.c.Control = nil
	bare := h.instance(t)
	h.pass(t)
	if got := h.state(t, bare); got.State != instance.StateStarting {
		t.Fatalf("no variables: %s %s", got.State, got.StateReason)
	}
	ct, kid := h.ring.Seal([]byte("v"), secret.EnvContext(h.project, "TOKEN"))
	if _, err := db.New(h.pool).EnvironmentVariableUpsert(context.Background(), db.EnvironmentVariableUpsertParams{
		ID: id.New(), ProjectID: h.project, Name: "TOKEN", ValueCiphertext: ct, KeyID: kid,
	}); err != nil {
		t.Fatal(err)
	}
	withVars := h.instance(t)
	h.pass(t)
	if got := h.state(t, withVars); got.State != instance.StateFailed || !strings.Contains(got.StateReason, "OPERATOR_URL") {
		t.Fatalf("variables without a control plane: %s %q", got.State, got.StateReason)
	}
}
