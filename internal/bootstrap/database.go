package bootstrap

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/dbrole"
)

// dbRoles are the database groups of the cluster's roles, in the order
// their users are made.
var dbRoles = []struct {
	role  Role
	group dbrole.Role
}{{RoleAPI, dbrole.API}, {RoleOperator, dbrole.Operator}, {RoleBuilder, dbrole.Builder}, {RoleWorker, dbrole.NodeAgent}, {RoleEdge, dbrole.Edge}}

// roleUser is one role's database user.
type roleUser struct {
	role           Role
	group          dbrole.Role
	name, password string
	url            string
}

// roleUsers are the users postgres.role_users asks for. A password is an
// HMAC of the user's name under key: every run derives the same one, and
// one leaked password tells nothing of the others.
func roleUsers(u RoleUsers, adminURL, key string) ([]roleUser, error) {
	var out []roleUser
	for _, r := range dbRoles {
		name := u.Prefix + "_" + string(r.group)
		mac := hmac.New(sha256.New, []byte(key))
		mac.Write([]byte("zeitwork database user " + name))
		password := hex.EncodeToString(mac.Sum(nil))
		url, err := dbrole.URL(adminURL, name, password)
		if err != nil {
			return nil, err
		}
		out = append(out, roleUser{role: r.role, group: r.group, name: name, password: password, url: url})
	}
	return out, nil
}

// roleUsersStep makes each role's user, with its password and in its
// group, after the migrations have made the groups. It is done when every
// user signs in with its password and is in its group.
func (b *Bootstrap) roleUsersStep() Step {
	return Step{
		Name: "database: role users " + b.Cluster.Postgres.RoleUsers.Prefix + "_<role>",
		Check: func(ctx context.Context) (Status, error) {
			var todo []string
			for _, u := range b.users {
				if err := signsIn(ctx, u); err != nil {
					todo = append(todo, u.name)
				}
			}
			if len(todo) > 0 {
				return Status{Detail: fmt.Sprintf("%d to make or fix: %v", len(todo), todo)}, nil
			}
			return Status{Done: true, Detail: fmt.Sprintf("%d users, each in its role's group", len(b.users))}, nil
		},
		Apply: func(ctx context.Context) error {
			for _, u := range b.users {
				if err := dbrole.EnsureUser(ctx, b.pool, u.name, u.password, u.group); err != nil {
					return err
				}
			}
			return nil
		},
	}
}

// signsIn connects as u and checks that it is a member of its group.
func signsIn(ctx context.Context, u roleUser) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, u.url)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var member bool
	if err := conn.QueryRow(ctx, "SELECT pg_has_role(current_user, $1, 'MEMBER')", u.group.Group()).Scan(&member); err != nil {
		return err
	}
	if !member {
		return fmt.Errorf("%s is not in %s", u.name, u.group.Group())
	}
	return nil
}
