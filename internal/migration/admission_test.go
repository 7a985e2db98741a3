package migration_test

import (
	"context"
	"slices"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/migration"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// Users who signed in before admission existed keep using the platform;
// users after it wait.
func TestAdmissionKeepsExistingUsersIn(t *testing.T) {
	ctx := context.Background()
	conn, err := pgx.Connect(ctx, testdb.Empty(t))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	ms := load(t)
	at := slices.IndexFunc(ms, func(m migration.Migration) bool { return m.Tag == "0008_admission" })
	if at < 0 {
		t.Fatal("no 0008_admission migration")
	}
	if _, err := migration.Apply(ctx, conn, ms[:at], zlog.Discard()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO users (id, github_user_id, username) VALUES (gen_random_uuid(), 1, 'early')`); err != nil {
		t.Fatal(err)
	}
	if _, err := migration.Apply(ctx, conn, ms, zlog.Discard()); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.Exec(ctx, `INSERT INTO users (id, github_user_id, username) VALUES (gen_random_uuid(), 2, 'late')`); err != nil {
		t.Fatal(err)
	}
	rows, err := conn.Query(ctx, `SELECT username, admitted FROM users ORDER BY github_user_id`)
	if err != nil {
		t.Fatal(err)
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (string, error) {
		var name string
		var admitted bool
		err := r.Scan(&name, &admitted)
		if admitted {
			name += "+"
		}
		return name, err
	})
	if err != nil || !slices.Equal(got, []string{"early+", "late"}) {
		t.Fatalf("users %v, %v", got, err)
	}
}
