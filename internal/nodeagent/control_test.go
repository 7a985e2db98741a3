package nodeagent_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/ipam"
	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/registryauth"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// controlPlane serves the operator's node routes, holding ring, and
// returns node's client for them with a fresh credential: the agent under
// test holds no key, as in production.
func controlPlane(t *testing.T, pool *pgxpool.Pool, nodeID uuid.UUID, ring *secret.Ring) *nodeagent.Control {
	t.Helper()
	srv := httptest.NewServer((&management.API{Pool: pool, Secrets: ring, Token: "management-only", Log: zlog.Discard()}).Handler())
	t.Cleanup(srv.Close)
	cred := node.NewCredential()
	if err := (node.Store{DB: pool}).SetCredential(context.Background(), nodeID, cred); err != nil {
		t.Fatal(err)
	}
	return &nodeagent.Control{URLs: []string{srv.URL}, NodeID: nodeID, Secret: cred}
}

// TestControlFailsOverToAnotherOperator: with a dead operator listed
// first, the agent's calls reach the next one; the registry credential
// it gets is its own node's; an operator that is no token service says so
// (the agent then pulls without credentials), and a wrong node secret is
// refused, not retried elsewhere.
func TestControlFailsOverToAnotherOperator(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	self, err := nodeagent.Register(ctx, pool, ipam.DefaultCluster, t.TempDir(), node.Registration{Hostname: "w1", InternalAddress: "100.64.0.9:7000", CPUMillis: 4000, MemoryMB: 8192})
	if err != nil {
		t.Fatal(err)
	}
	ring, _ := secret.ParseRing(secret.NewKey("k1"))
	tokens := &registryauth.Service{Secret: []byte("credential-secret")}
	live := httptest.NewServer((&management.API{Pool: pool, Secrets: ring, RegistryTokens: tokens, Token: "m", Log: zlog.Discard()}).Handler())
	defer live.Close()
	dead := httptest.NewServer(nil)
	dead.Close()
	cred := node.NewCredential()
	if err := (node.Store{DB: pool}).SetCredential(ctx, self.ID, cred); err != nil {
		t.Fatal(err)
	}
	c := &nodeagent.Control{URLs: []string{dead.URL, live.URL}, NodeID: self.ID, Secret: cred}
	auth, err := c.RegistryAuth(ctx)
	if err != nil || auth.Username != registryauth.NodePrincipal(self.ID) || tokens.Check(auth.Username, auth.Password) != nil {
		t.Fatalf("registry credential through the second operator: %+v %v", auth, err)
	}
	if _, err := c.Environment(ctx, id.New()); !errors.Is(err, nodeagent.ErrNotAssigned) {
		t.Fatalf("someone else's instance: %v", err)
	}

	plain := httptest.NewServer((&management.API{Pool: pool, Secrets: ring, Token: "m", Log: zlog.Discard()}).Handler())
	defer plain.Close()
	if _, err := (&nodeagent.Control{URLs: []string{plain.URL}, NodeID: self.ID, Secret: cred}).RegistryAuth(ctx); !errors.Is(err, nodeagent.ErrNoRegistryTokens) {
		t.Fatalf("operator without a token service: %v", err)
	}
	_, err = (&nodeagent.Control{URLs: []string{live.URL}, NodeID: self.ID, Secret: "wrong"}).Environment(ctx, id.New())
	if err == nil || errors.Is(err, nodeagent.ErrNotAssigned) || !strings.Contains(err.Error(), "401") || strings.Contains(err.Error(), cred) {
		t.Fatalf("wrong secret: %v", err)
	}
}
