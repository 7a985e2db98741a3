// Package dbrole names the Postgres roles of the platform's roles and makes
// their login users.
//
// The migrations (packages/database/migrations/0013_role_grants.sql and
// later ones) create one NOLOGIN group role per platform role and grant it
// exactly the tables that role's queries need. Groups, not users, hold the
// grants because roles are global to the Postgres cluster while each
// database (each test's, each platform's) has its own tables: a login user
// is whatever the deployment calls it, and joins its group. Whoever deploys
// makes the users — `zeitwork dev`, bootstrap, a DBA, the tests' testdb —
// with EnsureUser, and hands each role a DATABASE_URL naming its own user.
package dbrole

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// Role is a platform role that connects to Postgres.
type Role string

// The roles with a group of their own; migrate connects as the schema's
// owner and needs none.
const (
	API       Role = "api"
	Operator  Role = "operator"
	Builder   Role = "builder"
	NodeAgent Role = "nodeagent"
	Edge      Role = "edge"
)

// All lists every role with a group.
var All = []Role{API, Operator, Builder, NodeAgent, Edge}

// Group is the NOLOGIN role the migrations grant r's tables to.
func (r Role) Group() string { return "zeitwork_" + string(r) }

// Execer runs a statement: a *pgx.Conn, a pool or a transaction.
type Execer interface {
	Exec(ctx context.Context, sql string, args ...any) (pgconn.CommandTag, error)
}

// EnsureUser makes user a login role with password and a member of r's
// group, whether or not it existed; an existing user's password is reset
// to password. Several callers may ensure the same user at once (users are
// global to the Postgres cluster): the loser of a race retries rather than
// failing. The connection must be allowed to create roles (CREATEROLE).
func EnsureUser(ctx context.Context, conn Execer, user, password string, r Role) error {
	if user == "" || password == "" {
		return errors.New("dbrole: a user needs a name and a password")
	}
	for attempt := 1; ; attempt++ {
		err := ensureUser(ctx, conn, user, password, r)
		if err == nil || attempt == 20 || !concurrent(err) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Duration(attempt) * 10 * time.Millisecond):
		}
	}
}

func ensureUser(ctx context.Context, conn Execer, user, password string, r Role) error {
	ident := pgx.Identifier{user}.Sanitize()
	// CREATE ROLE takes no parameters; the literal is quoted the way
	// standard_conforming_strings (on since Postgres 9.1) reads it.
	lit := "'" + strings.ReplaceAll(password, "'", "''") + "'"
	_, err := conn.Exec(ctx, "CREATE ROLE "+ident+" LOGIN PASSWORD "+lit)
	if exists(err) {
		_, err = conn.Exec(ctx, "ALTER ROLE "+ident+" WITH LOGIN PASSWORD "+lit)
	}
	if err != nil {
		return fmt.Errorf("dbrole: user %s: %w", user, err)
	}
	if _, err := conn.Exec(ctx, "GRANT "+pgx.Identifier{r.Group()}.Sanitize()+" TO "+ident); err != nil && !exists(err) {
		return fmt.Errorf("dbrole: make %s a member of %s: %w", user, r.Group(), err)
	}
	return nil
}

// exists says whether err is Postgres refusing to create what is already
// there, or what a concurrent transaction has just created.
func exists(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "42710" || pg.Code == "23505") // duplicate_object, unique_violation
}

// concurrent says whether err is another session changing the same role at
// the same moment (Postgres's "tuple concurrently updated" on pg_authid or
// pg_auth_members): trying again succeeds.
func concurrent(err error) bool {
	var pg *pgconn.PgError
	return errors.As(err, &pg) && (pg.Code == "XX000" && strings.Contains(pg.Message, "concurrently updated") ||
		pg.Code == "40001" || pg.Code == "40P01")
}

// URL returns the connection URL base with its user and password replaced.
func URL(base, user, password string) (string, error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", errors.New("dbrole: the database URL does not parse") // url's error would quote the password
	}
	u.User = url.UserPassword(user, password)
	return u.String(), nil
}
