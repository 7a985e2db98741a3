package project_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/id"
	"github.com/zeitwork/zeitwork/internal/project"
	"github.com/zeitwork/zeitwork/internal/secret"
	"github.com/zeitwork/zeitwork/internal/testdb"
)

// TestRotationIsResumable: a rotation cancelled after its first batch
// leaves that batch under the new key and the rest readable under the old
// one; run again, it finishes, and every value still decrypts to what it
// was. A value under a key the ring lacks is named and passed over.
func TestRotationIsResumable(t *testing.T) {
	pool := testdb.New(t)
	ctx := context.Background()
	old := secret.NewKey("k1")
	k1, _ := secret.ParseRing(old)
	proj := testdb.Project(t, pool)
	want := map[string]string{}
	for i := range 5 {
		name, value := fmt.Sprintf("VAR_%d", i), fmt.Sprintf("value-%d", i)
		want[name] = value
		ct, kid := k1.Seal([]byte(value), secret.EnvContext(proj, name))
		if _, err := db.New(pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: name, ValueCiphertext: ct, KeyID: kid}); err != nil {
			t.Fatal(err)
		}
	}
	lost, _ := secret.ParseRing(secret.NewKey("k0"))
	ct, kid := lost.Seal([]byte("gone"), secret.EnvContext(proj, "LOST"))
	if _, err := db.New(pool).EnvironmentVariableUpsert(ctx, db.EnvironmentVariableUpsertParams{ID: id.New(), ProjectID: proj, Name: "LOST", ValueCiphertext: ct, KeyID: kid}); err != nil {
		t.Fatal(err)
	}

	ring, _ := secret.ParseRing(secret.NewKey("k2") + "," + old)
	cctx, cancel := context.WithCancel(ctx)
	first, err := project.RotateVariables(cctx, pool, ring, project.RotateOptions{BatchSize: 2, AfterBatch: func(project.Rotation) { cancel() }})
	if !errors.Is(err, context.Canceled) || first.Rotated != 2 || first.Batches != 1 {
		t.Fatalf("cancelled run: %+v, %v", first, err)
	}
	byKey := func() map[string]int {
		rows, err := db.New(pool).EnvironmentVariableListByProject(ctx, proj)
		if err != nil {
			t.Fatal(err)
		}
		m := map[string]int{}
		for _, r := range rows {
			m[r.KeyID]++
		}
		return m
	}
	if got := byKey(); got["k2"] != 2 || got["k1"] != 3 || got["k0"] != 1 {
		t.Fatalf("after the cancelled run: %v", got)
	}

	second, err := project.RotateVariables(ctx, pool, ring, project.RotateOptions{BatchSize: 2})
	if err != nil || second.Rotated != 3 || len(second.Failed) != 1 {
		t.Fatalf("second run: %+v, %v", second, err)
	}
	if got := byKey(); got["k2"] != 5 || got["k1"] != 0 || got["k0"] != 1 {
		t.Fatalf("after the second run: %v", got)
	}
	rows, _ := db.New(pool).EnvironmentVariableListByProject(ctx, proj)
	for _, r := range rows {
		if r.Name == "LOST" {
			continue
		}
		plain, err := ring.Open(r.ValueCiphertext, r.KeyID, secret.EnvContext(proj, r.Name))
		if err != nil || string(plain) != want[r.Name] || r.KeyID != "k2" {
			t.Fatalf("%s: %q under %s, %v", r.Name, plain, r.KeyID, err)
		}
	}
	// Done is done: a third run finds nothing but the lost one.
	third, err := project.RotateVariables(ctx, pool, ring, project.RotateOptions{BatchSize: 2})
	if err != nil || third.Rotated != 0 || len(third.Failed) != 1 {
		t.Fatalf("third run: %+v, %v", third, err)
	}
}
