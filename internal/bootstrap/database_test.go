package bootstrap

import (
	"net/url"
	"testing"
)

// TestRoleUsersPasswordsAreDerived: every run derives the same passwords
// from the key (nothing is stored), each user's is its own, and another
// key gives others.
func TestRoleUsersPasswordsAreDerived(t *testing.T) {
	admin := "postgres://owner:secret@db.internal:5432/zeitwork?sslmode=require"
	a, err := roleUsers(RoleUsers{Prefix: "zw"}, admin, "key-1")
	if err != nil {
		t.Fatal(err)
	}
	again, _ := roleUsers(RoleUsers{Prefix: "zw"}, admin, "key-1")
	other, _ := roleUsers(RoleUsers{Prefix: "zw"}, admin, "key-2")
	seen := map[string]bool{}
	for i, u := range a {
		if u.password != again[i].password || u.password == other[i].password || seen[u.password] || len(u.password) < 32 {
			t.Errorf("%s: password %q (again %q, other key %q)", u.name, u.password, again[i].password, other[i].password)
		}
		seen[u.password] = true
		p, err := url.Parse(u.url)
		if pw, _ := p.User.Password(); err != nil || p.User.Username() != u.name || pw != u.password || p.Host != "db.internal:5432" || p.RawQuery != "sslmode=require" {
			t.Errorf("%s: URL %s", u.name, u.url)
		}
	}
	if len(a) != 5 || a[3].name != "zw_nodeagent" || a[3].role != RoleWorker {
		t.Errorf("users %v", a)
	}
}
