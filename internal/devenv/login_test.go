package devenv

import (
	"errors"
	"os"
	"os/user"
	"testing"
)

// TestSudoLoginOwner: run as root through sudo, the login belongs to
// SUDO_USER, in their ~/.config (or in an XDG_CONFIG_HOME passed through
// sudo); run as root directly, or by sudo as root, nobody else.
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
	// One given on the command line (a test's) wins too: sudo would have
	// dropped any other.
	o, err = SudoLoginOwner(map[string]string{"SUDO_USER": "ada", "HOME": "/root", "XDG_CONFIG_HOME": "/tmp/test-config"})
	if err != nil || o == nil || o.ConfigHome != "/tmp/test-config" {
		t.Fatalf("XDG_CONFIG_HOME on the command line: %+v (%v)", o, err)
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
