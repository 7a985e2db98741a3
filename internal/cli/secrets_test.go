package cli

import (
	"context"
	"strings"
	"testing"

	"github.com/zeitwork/zeitwork/internal/certs"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// TestSecretsRotateReportsCounts: `zeitwork secrets rotate` moves the
// variables and certificate values to the newest keys and says how many;
// a value no key opens makes it exit 1 naming the variable, never a value.
func TestSecretsRotateReportsCounts(t *testing.T) {
	url := testdb.NewURL(t)
	pool := testdb.Pool(t, url)
	ctx := context.Background()
	k1 := secret.NewKey("k1")
	old, _ := secret.ParseRing(k1)
	proj := testdb.Project(t, pool)
	for _, name := range []string{"A", "B", "C"} {
		ct, kid := old.Seal([]byte("value-"+name), secret.EnvContext(proj, name))
		if _, err := db.New(pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: name, ValueCiphertext: ct, KeyID: kid}); err != nil {
			t.Fatal(err)
		}
	}
	if err := certs.NewStorage(pool, nil, zlog.Discard()).Store(ctx, "certificates/acme/a.test/a.test.key", []byte("-----BEGIN EC PRIVATE KEY-----")); err != nil {
		t.Fatal(err)
	}
	env := []string{"DATABASE_URL=" + url, "SECRETS_KEYS=" + secret.NewKey("k2") + "," + k1, "CERTIFICATE_KEYS=" + secret.NewKey("c1"), "SECRETS_ROTATE_BATCH=2"}
	code, out, errOut := run(t, env, "secrets", "rotate")
	if code != ExitOK || !strings.Contains(out, "variables: 3 re-encrypted under k2") || !strings.Contains(out, "(2 batches)") || !strings.Contains(out, "certificates: 1 sealed under c1") {
		t.Fatalf("exit %d\n%s\n%s", code, out, errOut)
	}
	code, out, _ = run(t, env, "secrets", "rotate")
	if code != ExitOK || !strings.Contains(out, "variables: 0 re-encrypted") || !strings.Contains(out, "certificates: 0 sealed") {
		t.Fatalf("second run: exit %d\n%s", code, out)
	}

	lost, _ := secret.ParseRing(secret.NewKey("k0"))
	ct, kid := lost.Seal([]byte("lost-value"), secret.EnvContext(proj, "LOST"))
	if _, err := db.New(pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: "LOST", ValueCiphertext: ct, KeyID: kid}); err != nil {
		t.Fatal(err)
	}
	code, out, errOut = run(t, env, "secrets", "rotate")
	if code != ExitFailure || !strings.Contains(out, "1 cannot be decrypted") || !strings.Contains(errOut, "LOST") || strings.Contains(out+errOut, "lost-value") {
		t.Fatalf("undecryptable: exit %d\n%s\n%s", code, out, errOut)
	}

	for _, args := range [][]string{{"secrets"}, {"secrets", "spin"}, {"secrets", "rotate", "extra"}} {
		if code, _, _ := run(t, env, args...); code != ExitUsage {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	if code, _, errOut := run(t, []string{"DATABASE_URL=" + url}, "secrets", "rotate"); code != ExitUsage || !strings.Contains(errOut, "SECRETS_KEYS") {
		t.Errorf("no keys: exit %d %s", code, errOut)
	}
}
