package nodeagent_test

import (
	"context"
	"net/http/httptest"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/zeitwork/zeitwork/internal/management"
	"github.com/zeitwork/zeitwork/internal/node"
	"github.com/zeitwork/zeitwork/internal/nodeagent"
	"github.com/zeitwork/zeitwork/internal/secret"
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
	return &nodeagent.Control{URL: srv.URL, NodeID: nodeID, Secret: cred}
}
