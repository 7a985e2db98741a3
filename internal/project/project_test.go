package project_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestProjectsAreVisibleToMembersOnly(t *testing.T) {
	ctx := context.Background()
	pool := testdb.New(t)
	accounts := account.Store{DB: pool}
	s := project.Store{DB: pool}
	alice, _, err := accounts.SignIn(ctx, account.Profile{GitHubUserID: 1, Login: "alice", Email: "alice@example.com"})
	if err != nil {
		t.Fatal(err)
	}
	bob, _, err := accounts.SignIn(ctx, account.Profile{GitHubUserID: 2, Login: "bob", Email: "bob@example.com"})
	if err != nil {
		t.Fatal(err)
	}

	p, err := s.Create(ctx, alice.ID, project.New{Name: "Shop"})
	if err != nil || p.Slug != "shop" {
		t.Fatalf("Create = %+v, %v", p, err)
	}
	if _, err := s.Get(ctx, bob.ID, p.ID); !errors.Is(err, project.ErrNotFound) {
		t.Fatalf("bob's Get = %v", err)
	}
	if got, err := s.Get(ctx, alice.ID, p.ID); err != nil || got.ID != p.ID {
		t.Fatalf("alice's Get = %+v, %v", got, err)
	}
	if list, err := s.List(ctx, bob.ID, uuid.Nil, 10); err != nil || len(list) != 0 {
		t.Fatalf("bob's List = %+v, %v", list, err)
	}
	if _, err := s.Create(ctx, bob.ID, project.New{Name: "Shop"}); !errors.Is(err, project.ErrSlugTaken) {
		t.Fatalf("taken slug: %v", err)
	}
	if _, err := s.Create(ctx, bob.ID, project.New{Name: "x", Organisation: p.OrganisationID}); !errors.Is(err, project.ErrInvalid) {
		t.Fatalf("bob creating in alice's organisation: %v", err)
	}

	// Bob joins Alice's organisation: he sees its projects, and must now
	// say where a new project goes.
	q := db.New(pool)
	if _, err := q.OrganisationMemberCreate(ctx, db.OrganisationMemberCreateParams{ID: id.New(), OrganisationID: p.OrganisationID, UserID: bob.ID, Role: "member"}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Get(ctx, bob.ID, p.ID); err != nil || got.ID != p.ID {
		t.Fatalf("member's Get = %+v, %v", got, err)
	}
	if _, err := s.Create(ctx, bob.ID, project.New{Name: "y"}); !errors.Is(err, project.ErrInvalid) {
		t.Fatalf("no organisation among two: %v", err)
	}
	if got, err := s.Create(ctx, bob.ID, project.New{Name: "y", Organisation: p.OrganisationID}); err != nil || got.OrganisationID != p.OrganisationID {
		t.Fatalf("Create in shared organisation = %+v, %v", got, err)
	}
	if list, err := s.List(ctx, bob.ID, uuid.Nil, 10); err != nil || len(list) != 2 {
		t.Fatalf("member's List = %+v, %v", list, err)
	}
}
