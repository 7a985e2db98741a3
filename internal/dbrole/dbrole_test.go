package dbrole_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// TestEnsureUserIsRaceSafe: users are global to the Postgres cluster, so
// several deployers (test binaries, a dev platform restarting) may make
// the same one at once. Every one of them succeeds, and the user signs in
// with the password and its group's grants.
func TestEnsureUserIsRaceSafe(t *testing.T) {
	url := testdb.NewURL(t) // migrated: the groups exist
	admin := testenv.Endpoints(t).Database.URL.Reveal()
	ctx := context.Background()
	// Named like testdb's users, so that a killed run's is dropped later.
	user := fmt.Sprintf("zw_test_%d_%s_race", time.Now().Unix(), strings.ReplaceAll(id.New().String()[24:], "-", ""))
	t.Cleanup(func() {
		if c, err := pgx.Connect(ctx, admin); err == nil {
			c.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{user}.Sanitize()) //nolint:errcheck
			c.Close(ctx)
		}
	})
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			conn, err := pgx.Connect(ctx, admin)
			if err != nil {
				errs <- err
				return
			}
			defer conn.Close(ctx)
			errs <- dbrole.EnsureUser(ctx, conn, user, "it's-a-pass", dbrole.Edge)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("concurrent EnsureUser: %v", err)
		}
	}
	u, err := dbrole.URL(url, user, "it's-a-pass")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := pgx.Connect(ctx, u)
	if err != nil {
		t.Fatalf("sign in as %s: %v", user, err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT key FROM certificates"); err != nil {
		t.Errorf("the edge's user reads certificates: %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT id FROM users"); err == nil {
		t.Error("the edge's user reads users")
	}
}
