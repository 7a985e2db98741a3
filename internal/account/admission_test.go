package account_test

import (
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/account"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

func TestAdmission(t *testing.T) {
	ctx := context.Background()
	s := account.Store{DB: testdb.New(t)}
	first, _, err := s.SignIn(ctx, profile(1, "root"))
	if err != nil || !first.Admitted || !first.Admin {
		t.Fatalf("first: %+v, %v", first, err)
	}
	bob, _, err := s.SignIn(ctx, profile(2, "bob"))
	if err != nil || bob.Admitted || bob.Admin {
		t.Fatalf("bob: %+v, %v", bob, err)
	}
	if waiting, err := s.Waiting(ctx); err != nil || len(waiting) != 1 || waiting[0].ID != bob.ID {
		t.Fatalf("waiting: %+v, %v", waiting, err)
	}
	if err := s.Admit(ctx, bob.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.Admit(ctx, uuid.New()); !errors.Is(err, account.ErrNotFound) {
		t.Fatalf("admit unknown: %v", err)
	}
	if again, _, err := s.SignIn(ctx, profile(2, "bob")); err != nil || !again.Admitted {
		t.Fatalf("bob again: %+v, %v", again, err)
	}
	if waiting, err := s.Waiting(ctx); err != nil || len(waiting) != 0 {
		t.Fatalf("waiting: %+v, %v", waiting, err)
	}
}

func TestJoinWaitlist(t *testing.T) {
	ctx := context.Background()
	s := account.Store{DB: testdb.New(t)}
	for _, e := range []string{"Ada@Example.com", " ada@example.com ", "bo@example.com"} {
		if err := s.JoinWaitlist(ctx, e); err != nil {
			t.Fatalf("%s: %v", e, err)
		}
	}
	for _, bad := range []string{"", "ada", "a@b@c", "Ada <ada@example.com>", `"a b"@example.com`} {
		if err := s.JoinWaitlist(ctx, bad); !errors.Is(err, account.ErrInvalid) {
			t.Errorf("%q: %v", bad, err)
		}
	}
	list, err := s.Waitlist(ctx)
	if err != nil || len(list) != 2 || list[0].Email != "ada@example.com" || list[1].Email != "bo@example.com" {
		t.Fatalf("waitlist: %+v, %v", list, err)
	}
}
