package backup_test

import (
	"context"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/backup"
	"github.com/zeitwork/zeitwork/internal/config"
)

// TestConfigRefusesWhatPgBackRestCannotUse: a plain-HTTP or malformed
// endpoint and a setting with a line break (which would inject a line into
// pgBackRest's configuration) are refused before anything is written.
func TestConfigRefusesWhatPgBackRestCannotUse(t *testing.T) {
	good := backup.Config{Stanza: "zeitwork", Endpoint: "https://127.0.0.1:9000", Bucket: "b", Path: "/p", AccessKey: "k", SecretKey: "s", WorkDir: t.TempDir(), RunAs: "root"}
	if err := good.WriteConfig(); err != nil {
		t.Fatalf("a good configuration: %v", err)
	}
	for name, mutate := range map[string]func(*backup.Config){
		"plain http": func(c *backup.Config) { c.Endpoint = "http://127.0.0.1:9000" },
		"no host":    func(c *backup.Config) { c.Endpoint = "https://" },
		"bad port":   func(c *backup.Config) { c.Endpoint = "https://h:port" },
		"line break": func(c *backup.Config) { c.SecretKey = config.Secret("s\nrepo1-path=/elsewhere") },
	} {
		c := good
		c.WorkDir = t.TempDir()
		mutate(&c)
		if err := c.WriteConfig(); err == nil {
			t.Errorf("%s: written", name)
		} else if strings.Contains(err.Error(), "elsewhere") {
			t.Errorf("%s: the error shows a secret: %v", name, err)
		}
	}
	if err := good.Backup(context.Background(), "weekly"); err == nil || !strings.Contains(err.Error(), "none of full, diff, incr") {
		t.Errorf("backup type weekly: %v", err)
	}
}
