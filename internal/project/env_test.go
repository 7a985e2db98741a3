package project_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestVariableEnvironmentsAreCheckedAndOrdered(t *testing.T) {
	const (
		prod = deployment.EnvironmentProduction
		prev = deployment.EnvironmentPreview
	)
	for _, c := range []struct {
		in   []deployment.Environment
		want string // "" when refused
	}{
		{nil, "[]"},
		{[]deployment.Environment{prod}, "[production]"},
		{[]deployment.Environment{prev}, "[preview]"},
		{[]deployment.Environment{prev, prod}, "[production preview]"},
		{[]deployment.Environment{}, ""},
		{[]deployment.Environment{"staging"}, ""},
		{[]deployment.Environment{"Production"}, ""},
		{[]deployment.Environment{prod, prod}, ""},
		{[]deployment.Environment{prod, prev, prev}, ""},
	} {
		got, err := project.VariableEnvironments(c.in)
		if c.want == "" {
			if !errors.Is(err, project.ErrInvalid) {
				t.Errorf("%q: %v, %v; want ErrInvalid", c.in, got, err)
			}
			continue
		}
		if err != nil || fmt.Sprint(got) != c.want || (c.in == nil) != (got == nil) {
			t.Errorf("%q: %v, %v; want %s", c.in, got, err, c.want)
		}
	}
}

// TestSetKeepsEnvironmentsUnlessGiven: the store alone (no API schema in
// front) refuses a bad list without writing, and leaves a variable's
// environments alone when a Set does not name them.
func TestSetKeepsEnvironmentsUnlessGiven(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	alice, _, err := account.Store{DB: pool}.SignIn(ctx, account.Profile{GitHubUserID: 1, Login: "alice", Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	p, err := project.Store{DB: pool}.Create(ctx, alice.ID, project.New{Name: "Shop"})
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := secret.ParseRing(secret.NewKey("k1"))
	v := project.Variables{DB: pool, Keys: ring}
	prodOnly := []deployment.Environment{deployment.EnvironmentProduction}

	if got, err := v.Set(ctx, alice.ID, p.ID, "KEY", "one", nil); err != nil || fmt.Sprint(got.Environments) != "[production preview]" {
		t.Fatalf("new, none given: %+v, %v", got, err)
	}
	if got, err := v.Set(ctx, alice.ID, p.ID, "KEY", "two", prodOnly); err != nil || fmt.Sprint(got.Environments) != "[production]" {
		t.Fatalf("given: %+v, %v", got, err)
	}
	if got, err := v.Set(ctx, alice.ID, p.ID, "KEY", "three", nil); err != nil || fmt.Sprint(got.Environments) != "[production]" {
		t.Fatalf("value only: %+v, %v", got, err)
	}
	for _, bad := range [][]deployment.Environment{{}, {"staging"}, {"production", "production"}} {
		if _, err := v.Set(ctx, alice.ID, p.ID, "KEY", "four", bad); !errors.Is(err, project.ErrInvalid) {
			t.Fatalf("%q: %v", bad, err)
		}
		if _, err := v.Set(ctx, alice.ID, p.ID, "OTHER", "x", bad); !errors.Is(err, project.ErrInvalid) {
			t.Fatalf("%q: %v", bad, err)
		}
	}
	got, value, err := v.Reveal(ctx, alice.ID, p.ID, "KEY")
	if err != nil || value != "three" || fmt.Sprint(got.Environments) != "[production]" {
		t.Fatalf("after refusals: %+v %q %v", got, value, err)
	}
	if _, _, err := v.Reveal(ctx, alice.ID, p.ID, "OTHER"); !errors.Is(err, project.ErrNoVariable) {
		t.Fatalf("a refused variable was written: %v", err)
	}
}
