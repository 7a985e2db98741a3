package deployment_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// Only members of the organisation owning a deployment's project see it;
// to anyone else it does not exist.
func TestMembersSeeTheirDeploymentsOnly(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	deps := deployment.Store{DB: pool}
	proj, member, stranger, dep, bld := testdb.Project(t, pool), id.New(), id.New(), id.New(), id.New()
	for _, stmt := range []struct {
		sql  string
		args []any
	}{
		{`INSERT INTO users (id, github_user_id, username) VALUES ($1, 1, 'member'), ($2, 2, 'stranger')`, []any{member, stranger}},
		{`INSERT INTO organisation_members (id, organisation_id, user_id, role) SELECT $1, organisation_id, $2, 'owner' FROM projects WHERE id = $3`, []any{id.New(), member, proj}},
		{`INSERT INTO deployments (id, project_id, source_type, github_commit_sha, github_ref, commit_message, replicas, created_by_user_id)
		  VALUES ($1, $2, 'github', repeat('a', 40), 'refs/heads/main', 'fix it', 3, $3)`, []any{dep, proj, member}},
		{`INSERT INTO builds (id, deployment_id, attempt, detected_kind) VALUES ($1, $2, 1, 'go')`, []any{bld, dep}},
	} {
		if _, err := pool.Exec(ctx, stmt.sql, stmt.args...); err != nil {
			t.Fatalf("%s: %v", stmt.sql, err)
		}
	}

	v, err := deps.GetForMember(ctx, member, dep)
	if err != nil {
		t.Fatal(err)
	}
	want := deployment.Source{Type: deployment.SourceGitHub, CommitSHA: "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", Ref: "refs/heads/main", CommitMessage: "fix it"}
	if v.Source != want || v.Framework != "go" || v.ProjectSlug == "" || v.CreatedBy == nil || *v.CreatedBy != member || v.Status != deployment.StatusQueued {
		t.Fatalf("member sees %+v", v)
	}
	if _, err := deps.GetForMember(ctx, stranger, dep); !errors.Is(err, deployment.ErrNotFound) {
		t.Fatalf("stranger's get: %v, want ErrNotFound", err)
	}
	for _, c := range []struct {
		user    uuid.UUID
		project *uuid.UUID
		want    int
	}{{member, nil, 1}, {member, &proj, 1}, {stranger, nil, 0}, {stranger, &proj, 0}} {
		if list, err := deps.ListForMember(ctx, c.user, deployment.MemberFilter{Project: c.project}, uuid.Nil, 10); err != nil || len(list) != c.want {
			t.Errorf("list for %s of %v: %d, %v; want %d", c.user, c.project, len(list), err, c.want)
		}
	}
	if list, err := deps.ListForMember(ctx, member, deployment.MemberFilter{}, dep, 10); err != nil || len(list) != 0 {
		t.Errorf("list after the last: %d, %v", len(list), err)
	}
}
