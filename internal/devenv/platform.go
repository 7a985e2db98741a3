package devenv

import (
	"bufio"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"

	"github.com/zeitwork/zeitwork/internal/secret"
)

// Secrets are the platform's own secrets in development: made once, kept
// in the state directory (mode 0600), reused on every run so instances and
// encrypted variables survive a restart of `zeitwork dev`.
type Secrets struct {
	ClusterToken string
	SecretsKeys  string
}

// LoadSecrets reads dir/secrets.env, creating it on first use.
func LoadSecrets(dir string) (Secrets, error) {
	path := filepath.Join(dir, "secrets.env")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Secrets{}, err
	}
	f, err := os.Open(path)
	if os.IsNotExist(err) {
		token := make([]byte, 24)
		_, _ = rand.Read(token)
		s := Secrets{ClusterToken: hex.EncodeToString(token), SecretsKeys: secret.NewKey("dev1")}
		content := "CLUSTER_TOKEN=" + s.ClusterToken + "\nSECRETS_KEYS=" + s.SecretsKeys + "\n"
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			return Secrets{}, err
		}
		return s, nil
	}
	if err != nil {
		return Secrets{}, err
	}
	defer f.Close()
	var s Secrets
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), "=")
		switch k {
		case "CLUSTER_TOKEN":
			s.ClusterToken = v
		case "SECRETS_KEYS":
			s.SecretsKeys = v
		}
	}
	if s.ClusterToken == "" || s.SecretsKeys == "" {
		return Secrets{}, fmt.Errorf("%s is incomplete; delete it to make new dev secrets", path)
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
