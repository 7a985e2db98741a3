package cli

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// savedLogin is what `zeitwork login` keeps, in
// $XDG_CONFIG_HOME/zeitwork/credentials.json (mode 0600: it holds a token).
type savedLogin struct {
	APIURL string `json:"api_url"`
	Token  string `json:"token"`
	// TokenID is set when login minted the token, so that logout can
	// revoke it; a token given with --token is only forgotten.
	TokenID string `json:"token_id,omitempty"`
}

// configDir is $XDG_CONFIG_HOME/zeitwork, or ~/.config/zeitwork; for dev
// run through sudo, the invoking user's.
func (u *user) configDir() (string, error) {
	if u.owner != nil {
		return filepath.Join(u.owner.ConfigHome, "zeitwork"), nil
	}
	v := u.vars()
	if d := v["XDG_CONFIG_HOME"]; d != "" && filepath.IsAbs(d) {
		return filepath.Join(d, "zeitwork"), nil
	}
	if h := v["HOME"]; h != "" {
		return filepath.Join(h, ".config", "zeitwork"), nil
	}
	return "", usagef("neither XDG_CONFIG_HOME nor HOME is set: nowhere to keep the login")
}

func (u *user) credentialsPath() (string, error) {
	dir, err := u.configDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "credentials.json"), nil
}

// loadCredentials reads the login; none is the zero value.
func (u *user) loadCredentials() (savedLogin, error) {
	var c savedLogin
	path, err := u.credentialsPath()
	if err != nil {
		return c, err
	}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read the login: %w", err)
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return c, fmt.Errorf("read the login: %s: %w", path, err)
	}
	return c, nil
}

// saveCredentials writes the login with mode 0600, through a temporary
// file so that a crash leaves the old login or the new one, never half.
func (u *user) saveCredentials(c savedLogin) (string, error) {
	path, err := u.credentialsPath()
	if err != nil {
		return "", err
	}
	made, err := mkdirAll(filepath.Dir(path), 0o700)
	if err != nil {
		return "", fmt.Errorf("save the login: %w", err)
	}
	if o := u.owner; o != nil {
		// Written by root for the user who ran sudo: the directories this
		// made and the file are theirs, or their CLI could not read it.
		for _, d := range made {
			if err := os.Chown(d, o.UID, o.GID); err != nil {
				return "", fmt.Errorf("save the login: %w", err)
			}
		}
	}
	b, _ := json.MarshalIndent(c, "", "  ") // strings only: cannot fail
	tmp, err := os.CreateTemp(filepath.Dir(path), ".credentials-*")
	if err != nil {
		return "", fmt.Errorf("save the login: %w", err)
	}
	defer os.Remove(tmp.Name()) // gone after the rename; cleans up a failure
	// CreateTemp makes the file 0600 already; Chmod says so for readers.
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("save the login: %w", err)
	}
	if o := u.owner; o != nil {
		if err := tmp.Chown(o.UID, o.GID); err != nil {
			tmp.Close()
			return "", fmt.Errorf("save the login: %w", err)
		}
	}
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return "", fmt.Errorf("save the login: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return "", fmt.Errorf("save the login: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("save the login: %w", err)
	}
	return path, nil
}

// mkdirAll is os.MkdirAll that also returns the directories it made,
// outermost first.
func mkdirAll(dir string, perm fs.FileMode) ([]string, error) {
	var missing []string
	for d := dir; ; d = filepath.Dir(d) {
		if _, err := os.Stat(d); err == nil || filepath.Dir(d) == d {
			break
		}
		missing = append([]string{d}, missing...)
	}
	if err := os.MkdirAll(dir, perm); err != nil {
		return nil, err
	}
	return missing, nil
}

// link is a directory's project, in <dir>/.zeitwork/project.json.
type link struct {
	ProjectID string `json:"project_id"`
	Slug      string `json:"slug"`
	APIURL    string `json:"api_url,omitempty"`
}

const linkFile = ".zeitwork/project.json"

// findLink walks up from dir to the nearest linked directory.
func findLink(dir string) (link, string, error) {
	dir, err := filepath.Abs(dir)
	if err != nil {
		return link{}, "", err
	}
	for {
		path := filepath.Join(dir, linkFile)
		b, err := os.ReadFile(path)
		if err == nil {
			var l link
			if err := json.Unmarshal(b, &l); err != nil || l.ProjectID == "" {
				return link{}, "", fmt.Errorf("%s is not a link; run `zeitwork link` again", path)
			}
			return l, path, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return link{}, "", fmt.Errorf("read %s: %w", path, err)
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return link{}, "", fs.ErrNotExist
		}
		dir = parent
	}
}

func writeLink(dir string, l link) (string, error) {
	path := filepath.Join(dir, linkFile)
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return "", fmt.Errorf("link: %w", err)
	}
	b, _ := json.MarshalIndent(l, "", "  ") // strings only: cannot fail
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return "", fmt.Errorf("link: %w", err)
	}
	return path, nil
}
