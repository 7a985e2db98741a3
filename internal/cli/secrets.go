package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/zeitwork/zeitwork/internal/certs"
	"github.com/zeitwork/zeitwork/internal/config"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// runSecrets is `zeitwork secrets rotate`: after a new key is put first in
// SECRETS_KEYS (and CERTIFICATE_KEYS) everywhere, it re-encrypts what is
// stored under older keys, so that those can then be removed.
func runSecrets(ctx context.Context, env Env, args []string) error {
	const usage = "usage: zeitwork secrets rotate (reads DATABASE_URL, SECRETS_KEYS, CERTIFICATE_KEYS, SECRETS_ROTATE_BATCH)"
	if len(args) == 0 || args[0] != "rotate" {
		return usageError{errors.New(usage)}
	}
	fs := flag.NewFlagSet("secrets rotate", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if err := fs.Parse(args[1:]); err != nil || fs.NArg() > 0 {
		return usageError{errors.New(usage)}
	}
	cfg, err := config.ParseFrom[config.SecretsRotate](env.vars())
	if err != nil {
		return err
	}
	if cfg.Secrets.Keys == nil && cfg.CertificateKeys.Keys == nil {
		return usageError{errors.New("neither SECRETS_KEYS nor CERTIFICATE_KEYS is set: nothing to rotate to")}
	}
	log := zlog.Component(zlog.New(env.Stderr, cfg.Log), "secrets")
	pool, err := openDatabase(ctx, cfg.Database)
	if err != nil {
		return err
	}
	defer pool.Close()

	failed := 0
	if keys := cfg.Secrets.Keys; keys != nil {
		r, err := project.RotateVariables(ctx, pool, keys, project.RotateOptions{BatchSize: cfg.BatchSize})
		fmt.Fprintf(env.Stdout, "variables: %d re-encrypted under %s, %d changed meanwhile, %d cannot be decrypted (%d batches)\n",
			r.Rotated, keys.Current(), r.Skipped, len(r.Failed), r.Batches)
		for _, f := range r.Failed {
			log.ErrorContext(ctx, "variable left under its old key", "reason", f)
		}
		failed += len(r.Failed)
		if err != nil {
			return fmt.Errorf("%w (run it again: what is done stays done)", err)
		}
	}
	if keys := cfg.CertificateKeys.Keys; keys != nil {
		r, err := certs.Rotate(ctx, pool, keys, cfg.BatchSize, nil)
		fmt.Fprintf(env.Stdout, "certificates: %d sealed under %s, %d changed meanwhile, %d cannot be opened (%d batches)\n",
			r.Sealed, keys.Current(), r.Skipped, len(r.Failed), r.Batches)
		for _, f := range r.Failed {
			log.ErrorContext(ctx, "certificate value left as it is", "reason", f)
		}
		failed += len(r.Failed)
		if err != nil {
			return fmt.Errorf("%w (run it again: what is done stays done)", err)
		}
	}
	if failed > 0 {
		return fmt.Errorf("%d values cannot be decrypted with the keys given: keep their keys in the ring", failed)
	}
	return nil
}
