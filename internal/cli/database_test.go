package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/config"
)

// DATABASE_MAX_CONNS reaches the pool every role is given, and a URL that
// pgx cannot use is refused without echoing its password.
func TestOpenDatabaseSizesThePoolAndHidesThePassword(t *testing.T) {
	pool, err := openDatabase(context.Background(), config.Database{URL: "postgres://u:pw@127.0.0.1:1/db", MaxConns: 3})
	if err != nil {
		t.Fatal(err)
	}
	defer pool.Close()
	if got := pool.Config().MaxConns; got != 3 {
		t.Fatalf("pool MaxConns = %d, want 3 from DATABASE_MAX_CONNS", got)
	}
	_, err = openDatabase(context.Background(), config.Database{URL: "postgres://u:s3cret@127.0.0.1:1/db?sslmode=bogus", MaxConns: 3})
	if err == nil || strings.Contains(err.Error(), "s3cret") || !strings.Contains(err.Error(), "DATABASE_URL") {
		t.Fatalf("bad URL: err = %v, want an error naming DATABASE_URL without the password", err)
	}
}
