// Package backup keeps the platform's one Postgres safe: continuous
// backups with pgBackRest (full backups plus every WAL segment archived)
// into the S3 bucket, and restores of them, to the end of the archive or
// to a point in time, into a fresh data directory.
//
// Why pgBackRest: it is packaged by Debian, checksums and compresses every
// file, archives WAL asynchronously to S3, verifies a backup's consistency
// and restores to a time with Postgres's own recovery. This package only
// writes its configuration and runs it; it keeps no state of its own, the
// repository in the bucket is the state.
//
// pgBackRest reads the data directory, so it runs as the cluster's owner
// (Config.RunAs, usually postgres) when the caller is root. Its S3 client
// speaks HTTPS only: the endpoint must serve TLS (a self-signed
// certificate is trusted through Config.CAFile).
package backup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/zeitwork/zeitwork/internal/config"
)

// Config says where the cluster is and where its backups go.
type Config struct {
	// Stanza names the cluster in the repository.
	Stanza string `env:"BACKUP_STANZA" envDefault:"zeitwork"`
	// DataDir is the cluster's data directory (pgBackRest's pg1-path), and
	// Port and SocketDir how pgBackRest reaches it (over the socket).
	DataDir   string `env:"BACKUP_PG_DATA" envDefault:"/var/lib/postgresql/15/main"`
	Port      int    `env:"BACKUP_PG_PORT" envDefault:"5432"`
	SocketDir string `env:"BACKUP_PG_SOCKET_DIR" envDefault:"/var/run/postgresql"`
	User      string `env:"BACKUP_PG_USER" envDefault:"postgres"`
	// S3 is the bucket: https://host:port, the bucket, the path in it.
	Endpoint  string        `env:"BACKUP_S3_ENDPOINT,required"`
	Region    string        `env:"BACKUP_S3_REGION" envDefault:"us-east-1"`
	Bucket    string        `env:"BACKUP_S3_BUCKET,required"`
	Path      string        `env:"BACKUP_S3_PATH" envDefault:"/pgbackrest"`
	AccessKey string        `env:"BACKUP_S3_ACCESS_KEY_ID,required"`
	SecretKey config.Secret `env:"BACKUP_S3_SECRET_ACCESS_KEY,required"`
	// CAFile is the certificate authority the endpoint's certificate is
	// checked against; empty: the system's.
	CAFile string `env:"BACKUP_S3_CA_FILE"`
	// CipherPass, when set, encrypts the repository (AES-256-CBC): the
	// bucket then holds nothing readable without it.
	CipherPass config.Secret `env:"BACKUP_CIPHER_PASS"`
	// RetentionFull is how many full backups the repository keeps (and
	// the WAL they need).
	RetentionFull int `env:"BACKUP_RETENTION_FULL" envDefault:"4"`
	// WorkDir holds the configuration file pgBackRest reads, its lock and
	// its log; owned by RunAs.
	WorkDir string `env:"BACKUP_WORK_DIR" envDefault:"/var/lib/zeitwork-backup"`
	// RunAs is the user pgBackRest runs as when this process is root: the
	// owner of the data directory.
	RunAs string `env:"BACKUP_RUN_AS" envDefault:"postgres"`
	// Binary is pgBackRest's path.
	Binary string `env:"BACKUP_PGBACKREST" envDefault:"pgbackrest"`
}

// ErrNoBackup is returned by Restore when the repository holds none.
var ErrNoBackup = errors.New("backup: the repository holds no backup")

// ConfigPath is where WriteConfig puts pgBackRest's configuration.
func (c Config) ConfigPath() string { return filepath.Join(c.WorkDir, "pgbackrest.conf") }

// ArchiveCommand is Postgres's archive_command: every finished WAL
// segment goes to the repository.
func (c Config) ArchiveCommand() string {
	return fmt.Sprintf("%s --config=%s --stanza=%s archive-push %%p", c.Binary, c.ConfigPath(), c.Stanza)
}

// render is pgBackRest's configuration for c. It holds the bucket's keys,
// hence the file's mode.
func (c Config) render() (string, error) {
	u, err := url.Parse(c.Endpoint)
	if err != nil || u.Scheme != "https" || u.Hostname() == "" {
		return "", fmt.Errorf("backup: BACKUP_S3_ENDPOINT %q is not https://host[:port] (pgBackRest speaks TLS only)", c.Endpoint)
	}
	port := 443
	if p := u.Port(); p != "" {
		if port, err = strconv.Atoi(p); err != nil {
			return "", fmt.Errorf("backup: BACKUP_S3_ENDPOINT %q: port: %w", c.Endpoint, err)
		}
	}
	for _, v := range []string{c.Stanza, c.Bucket, c.Path, c.AccessKey, c.SecretKey.Reveal(), c.CipherPass.Reveal(), c.DataDir, c.SocketDir} {
		if strings.ContainsAny(v, "\n\r") {
			return "", errors.New("backup: a setting holds a line break")
		}
	}
	var b strings.Builder
	line := func(k string, v any) { fmt.Fprintf(&b, "%s=%v\n", k, v) }
	b.WriteString("[global]\n")
	line("repo1-type", "s3")
	line("repo1-s3-endpoint", u.Hostname())
	line("repo1-storage-port", port)
	line("repo1-s3-bucket", c.Bucket)
	line("repo1-s3-region", c.Region)
	line("repo1-s3-key", c.AccessKey)
	line("repo1-s3-key-secret", c.SecretKey.Reveal())
	line("repo1-s3-uri-style", "path")
	line("repo1-path", c.Path)
	if c.CAFile != "" {
		line("repo1-storage-ca-file", c.CAFile)
	}
	if c.CipherPass.Reveal() != "" {
		line("repo1-cipher-type", "aes-256-cbc")
		line("repo1-cipher-pass", c.CipherPass.Reveal())
	}
	line("repo1-retention-full", c.RetentionFull)
	line("compress-type", "zst")
	line("start-fast", "y")
	line("archive-async", "n")
	line("log-path", c.WorkDir)
	line("lock-path", c.WorkDir)
	line("spool-path", c.WorkDir)
	line("log-level-console", "warn")
	line("log-level-file", "info")
	fmt.Fprintf(&b, "\n[%s]\n", c.Stanza)
	line("pg1-path", c.DataDir)
	line("pg1-port", c.Port)
	line("pg1-socket-path", c.SocketDir)
	line("pg1-user", c.User)
	return b.String(), nil
}

// WriteConfig writes pgBackRest's configuration (mode 0600, owned by
// RunAs when this process is root), creating WorkDir.
func (c Config) WriteConfig() error {
	text, err := c.render()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.WorkDir, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if err := os.WriteFile(c.ConfigPath(), []byte(text), 0o600); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if c.asOther() {
		if out, err := exec.Command("chown", "-R", c.RunAs+":", c.WorkDir).CombinedOutput(); err != nil {
			return fmt.Errorf("backup: chown %s to %s: %v: %s", c.WorkDir, c.RunAs, err, bytes.TrimSpace(out))
		}
	}
	return nil
}

func (c Config) asOther() bool { return os.Geteuid() == 0 && c.RunAs != "" && c.RunAs != "root" }

// run runs pgBackRest with the written configuration and returns its
// standard output; a failure carries what it printed.
func (c Config) run(ctx context.Context, args ...string) ([]byte, error) {
	argv := append([]string{c.Binary, "--config=" + c.ConfigPath(), "--stanza=" + c.Stanza}, args...)
	if c.asOther() {
		argv = append([]string{"runuser", "-u", c.RunAs, "--"}, argv...)
	}
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = c.WorkDir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(stderr.String() + "\n" + stdout.String())
		return nil, fmt.Errorf("backup: pgbackrest %s: %w: %s", args[0], err, msg)
	}
	return stdout.Bytes(), nil
}

// Setup writes the configuration and creates the stanza in the repository
// (idempotent), then checks that the cluster archives into it: Postgres
// must already run with archive_mode=on and ArchiveCommand.
func (c Config) Setup(ctx context.Context) error {
	if err := c.WriteConfig(); err != nil {
		return err
	}
	if _, err := c.run(ctx, "stanza-create"); err != nil {
		return err
	}
	_, err := c.run(ctx, "check")
	return err
}

// Kind is a backup's type.
type Kind string

const (
	Full         Kind = "full"
	Differential Kind = "diff"
	Incremental  Kind = "incr"
)

// Backup takes a backup of the running cluster.
func (c Config) Backup(ctx context.Context, kind Kind) error {
	switch kind {
	case Full, Differential, Incremental:
	default:
		return fmt.Errorf("backup: type %q is none of full, diff, incr", kind)
	}
	if err := c.WriteConfig(); err != nil {
		return err
	}
	_, err := c.run(ctx, "backup", "--type="+string(kind))
	return err
}

// Info is one backup in the repository.
type Info struct {
	Label string
	Type  Kind
	Start time.Time
	Stop  time.Time
}

// List returns the repository's backups, oldest first.
func (c Config) List(ctx context.Context) ([]Info, error) {
	if err := c.WriteConfig(); err != nil {
		return nil, err
	}
	out, err := c.run(ctx, "info", "--output=json")
	if err != nil {
		return nil, err
	}
	var stanzas []struct {
		Backup []struct {
			Label     string `json:"label"`
			Type      string `json:"type"`
			Timestamp struct {
				Start int64 `json:"start"`
				Stop  int64 `json:"stop"`
			} `json:"timestamp"`
		} `json:"backup"`
	}
	if err := json.Unmarshal(out, &stanzas); err != nil {
		return nil, fmt.Errorf("backup: pgbackrest info: %w", err)
	}
	var list []Info
	for _, s := range stanzas {
		for _, b := range s.Backup {
			list = append(list, Info{Label: b.Label, Type: Kind(b.Type), Start: time.Unix(b.Timestamp.Start, 0), Stop: time.Unix(b.Timestamp.Stop, 0)})
		}
	}
	return list, nil
}

// Restore writes the newest backup that precedes target into dataDir, an
// empty directory (or a missing one) owned by RunAs, set up to replay the
// archived WAL up to target and then promote; the zero target replays
// all of it. Starting Postgres on dataDir finishes the restore.
func (c Config) Restore(ctx context.Context, dataDir string, target time.Time) error {
	if entries, err := os.ReadDir(dataDir); err == nil && len(entries) > 0 {
		return fmt.Errorf("backup: restore into %s: not empty", dataDir)
	}
	list, err := c.List(ctx)
	if err != nil {
		return err
	}
	if len(list) == 0 {
		return ErrNoBackup
	}
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return fmt.Errorf("backup: %w", err)
	}
	if c.asOther() {
		if out, err := exec.Command("chown", c.RunAs+":", dataDir).CombinedOutput(); err != nil {
			return fmt.Errorf("backup: chown %s: %v: %s", dataDir, err, bytes.TrimSpace(out))
		}
	}
	args := []string{"restore", "--pg1-path=" + dataDir}
	if !target.IsZero() {
		args = append(args, "--type=time", "--target="+target.UTC().Format("2006-01-02 15:04:05.000000-07"), "--target-action=promote")
	}
	_, err = c.run(ctx, args...)
	return err
}
