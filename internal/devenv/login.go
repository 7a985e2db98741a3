package devenv

import (
	"fmt"
	"os"
	"os/user"
	"path/filepath"
	"strconv"
)

// LoginOwner is the person `zeitwork dev` signs the CLI in for when it
// runs as root through sudo: dev needs root (network namespaces,
// nftables, containerd), but the CLI afterwards runs as the developer, who
// must find the login in their own config directory and be able to read it.
type LoginOwner struct {
	Name     string
	UID, GID int
	// ConfigHome is where the CLI of that user keeps its configuration:
	// their XDG_CONFIG_HOME, else ~/.config.
	ConfigHome string
}

// lookupUser is os/user.Lookup; a test swaps it for a user of its own
// making, since it cannot add one to the machine's passwd.
var lookupUser = user.Lookup

// SudoLoginOwner returns the user who ran dev through sudo (SUDO_USER in
// vars) when the process is root, and nil otherwise: run directly, as
// root or not, the login stays where the process's own environment says.
func SudoLoginOwner(vars map[string]string) (*LoginOwner, error) {
	name := vars["SUDO_USER"]
	if os.Geteuid() != 0 || name == "" || name == "root" {
		return nil, nil
	}
	u, err := lookupUser(name)
	if err != nil {
		return nil, fmt.Errorf("SUDO_USER %q: %w", name, err)
	}
	uid, err1 := strconv.Atoi(u.Uid)
	gid, err2 := strconv.Atoi(u.Gid)
	if err1 != nil || err2 != nil || u.HomeDir == "" {
		return nil, fmt.Errorf("SUDO_USER %q: no numeric ids or home directory", name)
	}
	o := &LoginOwner{Name: name, UID: uid, GID: gid, ConfigHome: filepath.Join(u.HomeDir, ".config")}
	// sudo resets the environment, so an XDG_CONFIG_HOME that is there was
	// passed on on purpose (sudo -E, or set on the command line, as the
	// tests that start dev do): it wins over the user's ~/.config.
	if d := vars["XDG_CONFIG_HOME"]; d != "" && filepath.IsAbs(d) {
		o.ConfigHome = d
	}
	return o, nil
}
