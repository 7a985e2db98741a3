package devenv

import (
	"errors"
	"os"
	"os/user"
	"testing"
)

// TestSudoLoginOwner: run as root through sudo, the login belongs to
// SUDO_USER, in their ~/.config (or the XDG_CONFIG_HOME sudo -E kept for
// them); run as root directly, or by sudo as root, nobody else.
func TestSudoLoginOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("SUDO_USER only counts for root")
	}
	lookupUser = func(name string) (*user.User, error) {
		if name != "ada" {
			return nil, user.UnknownUserError(name)
		}
		return &user.User{Username: "ada", Uid: "1000", Gid: "1001", HomeDir: "/home/ada"}, nil
	}
	t.Cleanup(func() { lookupUser = user.Lookup })

	o, err := SudoLoginOwner(map[string]string{"SUDO_USER": "ada", "HOME": "/root"})
	if err != nil || o == nil || o.UID != 1000 || o.GID != 1001 || o.ConfigHome != "/home/ada/.config" {
		t.Fatalf("sudo: %+v (%v)", o, err)
	}
	o, err = SudoLoginOwner(map[string]string{"SUDO_USER": "ada", "HOME": "/home/ada", "XDG_CONFIG_HOME": "/home/ada/cfg"})
	if err != nil || o == nil || o.ConfigHome != "/home/ada/cfg" {
		t.Fatalf("sudo -E: %+v (%v)", o, err)
	}
	// Root's own XDG_CONFIG_HOME (sudo without -E keeps HOME=/root) is not hers.
	o, err = SudoLoginOwner(map[string]string{"SUDO_USER": "ada", "HOME": "/root", "XDG_CONFIG_HOME": "/root/cfg"})
	if err != nil || o == nil || o.ConfigHome != "/home/ada/.config" {
		t.Fatalf("root's XDG_CONFIG_HOME: %+v (%v)", o, err)
	}
	for _, vars := range []map[string]string{{}, {"SUDO_USER": "root"}} {
		if o, err := SudoLoginOwner(vars); o != nil || err != nil {
			t.Errorf("%v: %+v (%v), want nobody", vars, o, err)
		}
	}
	var unknown user.UnknownUserError
	if _, err := SudoLoginOwner(map[string]string{"SUDO_USER": "nobody-here"}); !errors.As(err, &unknown) {
		t.Errorf("unknown SUDO_USER: %v", err)
	}
}
