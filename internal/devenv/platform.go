package devenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/dbrole"
	"github.com/zeitwork/zeitwork/internal/secret"
)

// Secrets are the platform's own secrets in development: made once, kept
// in the state directory (mode 0600), reused on every run so instances and
// encrypted variables survive a restart of `zeitwork dev`.
type Secrets struct {
	ClusterToken    string // the node API's
	SecretsKeys     string
	NodeProxyToken  string // the edge's at the node-proxies
	ManagementToken string // the management API's
	// DatabasePassword is the password of the roles' database users.
	DatabasePassword string
}

// secretField is one line of secrets.env, and how to make its value.
type secretField struct {
	key string
	val *string
	new func() string
}

// fields are secrets.env's variables in the order it lists them (tests
// read the first two by position).
func (s *Secrets) fields() []secretField {
	token := func() string {
		b := make([]byte, 24)
		_, _ = rand.Read(b)
		return hex.EncodeToString(b)
	}
	return []secretField{
		{"CLUSTER_TOKEN", &s.ClusterToken, token},
		{"SECRETS_KEYS", &s.SecretsKeys, func() string { return secret.NewKey("dev1") }},
		{"NODE_PROXY_TOKEN", &s.NodeProxyToken, token},
		{"MANAGEMENT_TOKEN", &s.ManagementToken, token},
		{"DATABASE_PASSWORD", &s.DatabasePassword, token},
	}
}

// LoadSecrets reads dir/secrets.env, creating it on first use and adding
// what a file of an older version lacks (its other secrets are kept).
func LoadSecrets(dir string) (Secrets, error) {
	path := filepath.Join(dir, "secrets.env")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Secrets{}, err
	}
	var s Secrets
	fields := s.fields()
	f, err := os.Open(path)
	switch {
	case err == nil:
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			k, v, _ := strings.Cut(sc.Text(), "=")
			for _, fl := range fields {
				if fl.key == k {
					*fl.val = v
				}
			}
		}
		f.Close()
		if err := sc.Err(); err != nil {
			return Secrets{}, fmt.Errorf("%s: %w", path, err)
		}
		if s.ClusterToken == "" || s.SecretsKeys == "" {
			return Secrets{}, fmt.Errorf("%s is incomplete; delete it to make new dev secrets", path)
		}
	case !os.IsNotExist(err):
		return Secrets{}, err
	}
	var content strings.Builder
	missing := false
	for _, fl := range fields {
		if *fl.val == "" {
			*fl.val, missing = fl.new(), true
		}
		content.WriteString(fl.key + "=" + *fl.val + "\n")
	}
	if missing {
		if err := os.WriteFile(path, []byte(content.String()), 0o600); err != nil {
			return Secrets{}, err
		}
	}
	return s, nil
}

// EnsureNetns makes the named network namespace (a simulated node) if it
// does not exist, with loopback up, and returns its path.
func EnsureNetns(name string) (string, error) {
	path := "/run/netns/" + name
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return "", fmt.Errorf("ip netns add %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return "", fmt.Errorf("loopback in %s: %v: %s", name, err, strings.TrimSpace(string(out)))
	}
	return path, nil
}

// RoleUsers makes a database user <prefix>_<role> for every platform role,
// a member of that role's group (internal/dbrole) with password, through
// the admin connection at adminURL (which must be allowed to create
// roles), and returns each role's DATABASE_URL: dev's roles see the
// database with the same grants as in production.
func RoleUsers(ctx context.Context, adminURL, prefix, password string) (map[dbrole.Role]string, error) {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return nil, err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	urls := map[dbrole.Role]string{}
	for _, r := range dbrole.All {
		user := prefix + "_" + string(r)
		if err := dbrole.EnsureUser(ctx, conn, user, password, r); err != nil {
			return nil, err
		}
		if urls[r], err = dbrole.URL(adminURL, user, password); err != nil {
			return nil, err
		}
	}
	return urls, nil
}

// DropRoleUsers drops the users RoleUsers made for the platform named
// prefix: they are global to the Postgres cluster and outlive a test's
// database.
func DropRoleUsers(ctx context.Context, adminURL, prefix string) error {
	conn, err := pgx.Connect(ctx, adminURL)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	for _, r := range dbrole.All {
		if _, err := conn.Exec(ctx, "DROP ROLE IF EXISTS "+pgx.Identifier{prefix + "_" + string(r)}.Sanitize()); err != nil {
			return err
		}
	}
	return nil
}
