package edge_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/testenv"
)

// A change whose notification is lost (nobody was listening when it was
// sent) still reaches the edge: reconnecting rebuilds the whole table.
func TestReconnectRebuildsWhatNotificationsMissed(t *testing.T) {
	url := testdb.NewURL(t)
	w := newWorld(t, url)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Polling is a minute: only the reconnect can bring the change in time.
	w.startEdge(ctx, w.pool, "")
	host := w.slug + ".zeitwork.test"
	v1 := w.deploy(ctx)
	w.eventually(host, func(code int, body string) bool { return code == 200 && body == v1.String() })

	admin, err := pgx.Connect(ctx, testenv.Endpoints(t).Database.URL.Reveal())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { admin.Close(context.Background()) })
	writer, err := pgx.Connect(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { writer.Close(context.Background()) })
	var name string
	if err := writer.QueryRow(ctx, "SELECT current_database()").Scan(&name); err != nil {
		t.Fatal(err)
	}
	allow := func(yes bool) {
		t.Helper()
		if _, err := admin.Exec(context.Background(), "ALTER DATABASE "+pgx.Identifier{name}.Sanitize()+" ALLOW_CONNECTIONS "+strconv.FormatBool(yes)); err != nil {
			t.Fatal(err)
		}
	}
	allow(false)
	t.Cleanup(func() { allow(true) })
	// Every connection but the writer's goes, the listener's among them,
	// and none can come back.
	deadline := time.Now().Add(30 * time.Second)
	for {
		var listening int
		if err := admin.QueryRow(ctx, `
			SELECT count(*) FILTER (WHERE query LIKE 'LISTEN %'), count(pg_terminate_backend(pid))
			  FROM pg_stat_activity WHERE datname = $1 AND pid <> $2`, name, writer.PgConn().PID()).Scan(&listening, new(int)); err != nil {
			t.Fatal(err)
		}
		if listening > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the edge never listened")
		}
		time.Sleep(20 * time.Millisecond)
	}

	if _, err := writer.Exec(ctx, `INSERT INTO domains (id, project_id, name, status, verification_token, verified_at) VALUES ($1, $2, 'app.customer.test', 'verified', 't', now())`, id.New(), w.project); err != nil {
		t.Fatal(err)
	}
	allow(true)
	w.eventually("app.customer.test", func(code int, body string) bool { return code == 200 && body == v1.String() })
}
