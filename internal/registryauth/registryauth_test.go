package registryauth_test

import (
	"reflect"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/registryauth"
)

func TestCredentialsExpireAndCannotBeForged(t *testing.T) {
	svc := newService(t)
	now := time.Now()
	svc.Now = func() time.Time { return now }
	p := registryauth.ProjectPrincipal(id.New())
	pass := svc.Mint(p, time.Minute)
	if err := svc.Check(p, pass); err != nil {
		t.Fatalf("fresh credential refused: %v", err)
	}
	if err := svc.Check(registryauth.Admin, pass); err == nil {
		t.Fatal("a project's password worked for admin")
	}
	other := newService(t)
	if err := other.Check(p, pass); err == nil {
		t.Fatal("a password minted with another secret was accepted")
	}
	if err := svc.Check("project-not-a-uuid", svc.Mint("project-not-a-uuid", time.Minute)); err == nil {
		t.Fatal("a malformed principal was accepted")
	}
	now = now.Add(2 * time.Minute)
	if err := svc.Check(p, pass); err == nil {
		t.Fatal("an expired credential was accepted")
	}
}

func TestGrantNarrowsToThePrincipalsRights(t *testing.T) {
	a, b := id.New(), id.New()
	pa := registryauth.ProjectPrincipal(a)
	got := registryauth.Grant(pa, []string{
		"repository:" + a.String() + ":pull,push,delete",
		"repository:" + b.String() + ":pull",
		"repository:base/node:pull,push",
		"registry:catalog:*",
	})
	want := []registryauth.Access{
		{Type: "repository", Name: a.String(), Actions: []string{"pull", "push"}},
		{Type: "repository", Name: "base/node", Actions: []string{"pull"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("Grant = %+v, want %+v", got, want)
	}
	if got := registryauth.Grant(registryauth.Puller, []string{"repository:x:pull,push"}); len(got) != 1 || !reflect.DeepEqual(got[0].Actions, []string{"pull"}) {
		t.Fatalf("puller: %+v", got)
	}
}

func TestNodePrincipalsGetPullOnTheirProjectsOnly(t *testing.T) {
	a, b := id.New(), id.New()
	svc := &registryauth.Service{Secret: []byte("s")}
	p := registryauth.NodePrincipal(id.New())
	if err := svc.Check(p, svc.Mint(p, time.Minute)); err != nil {
		t.Fatalf("node principal: %v", err)
	}
	got := registryauth.GrantNode([]uuid.UUID{a}, []string{"repository:" + a.String() + ":pull,push", "repository:" + b.String() + ":pull", "repository:base/x:pull"})
	if len(got) != 1 || got[0].Name != a.String() || !reflect.DeepEqual(got[0].Actions, []string{"pull"}) {
		t.Fatalf("grant: %+v", got)
	}
	// Grant alone (no database) gives a node principal nothing.
	if got := registryauth.Grant(p, []string{"repository:" + a.String() + ":pull"}); len(got) != 0 {
		t.Fatalf("Grant for a node: %+v", got)
	}
}
