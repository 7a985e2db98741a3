package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/zeitwork/zeitwork/internal/backup"
	"github.com/zeitwork/zeitwork/internal/config"
)

// runBackup takes a backup of the platform's Postgres with pgBackRest
// into the bucket (BACKUP_* variables), or with --setup prepares the
// repository (run once, after Postgres archives with `zeitwork backup
// --archive-command`), or with --list shows what it holds.
func runBackup(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("backup", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	kind := fs.String("type", "full", "full, diff or incr")
	setup := fs.Bool("setup", false, "create the repository's stanza and check that WAL is archived")
	list := fs.Bool("list", false, "list the backups in the repository")
	archive := fs.Bool("archive-command", false, "print Postgres's archive_command and write pgBackRest's configuration")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (flags: --type full|diff|incr, --setup, --list, --archive-command)", err)}
	}
	cfg, err := config.ParseFrom[backup.Config](env.vars())
	if err != nil {
		return err
	}
	switch {
	case *archive:
		if err := cfg.WriteConfig(); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, cfg.ArchiveCommand())
		return nil
	case *setup:
		if err := cfg.Setup(ctx); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "stanza %s ready in s3 bucket %s%s; WAL archiving checked\n", cfg.Stanza, cfg.Bucket, cfg.Path)
		return nil
	case *list:
		backups, err := cfg.List(ctx)
		if err != nil {
			return err
		}
		for _, b := range backups {
			fmt.Fprintf(env.Stdout, "%s  %-4s  %s → %s\n", b.Label, b.Type, b.Start.UTC().Format(time.RFC3339), b.Stop.UTC().Format(time.RFC3339))
		}
		return nil
	}
	switch k := backup.Kind(*kind); k {
	case backup.Full, backup.Differential, backup.Incremental:
		start := time.Now()
		if err := cfg.Backup(ctx, k); err != nil {
			return err
		}
		fmt.Fprintf(env.Stdout, "%s backup of stanza %s taken in %s\n", k, cfg.Stanza, time.Since(start).Round(time.Second))
		return nil
	default:
		return usageError{fmt.Errorf("--type %q is none of full, diff, incr", *kind)}
	}
}

// runRestore writes a backup into a new data directory, set up to replay
// the archived WAL to --time (RFC 3339) or to its end; starting Postgres
// on that directory finishes the restore.
func runRestore(ctx context.Context, env Env, args []string) error {
	fs := flag.NewFlagSet("restore", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	to := fs.String("to", "", "the new, empty data directory")
	at := fs.String("time", "", "restore to this moment (RFC 3339); default: everything archived")
	if err := fs.Parse(args); err != nil {
		return usageError{fmt.Errorf("%w (flags: --to DIR, --time RFC3339)", err)}
	}
	if *to == "" {
		return usageError{fmt.Errorf("--to names the data directory to restore into")}
	}
	var target time.Time
	if *at != "" {
		var err error
		if target, err = time.Parse(time.RFC3339Nano, *at); err != nil {
			return usageError{fmt.Errorf("--time %q is not RFC 3339 (2026-01-02T15:04:05Z)", *at)}
		}
	}
	cfg, err := config.ParseFrom[backup.Config](env.vars())
	if err != nil {
		return err
	}
	if err := cfg.Restore(ctx, *to, target); err != nil {
		return err
	}
	fmt.Fprintf(env.Stdout, "restored into %s; start Postgres on it to replay the WAL and promote\n", *to)
	return nil
}
