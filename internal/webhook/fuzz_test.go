package webhook_test

import (
	"context"
	"net/http"
	"testing"
)

// FuzzHandler: whatever the body and headers, the receiver answers without
// a 5xx or a panic, and writes nothing unless the signature is valid.
func FuzzHandler(f *testing.F) {
	fx := newFixture(f)
	for _, seed := range []struct {
		event string
		body  []byte
	}{
		{"push", pushPayload("refs/heads/main", sha1, "Add a greeting")},
		{"push", pushPayload("refs/heads/feature", sha2, "wip")},
		{"push", pushPayload("refs/tags/v1.0.0", sha2, "v1")},
		{"ping", []byte(`{"zen":"Design for failure.","hook_id":1,"hook":{"type":"App","events":["push"]}}`)},
		{"installation", installationPayload("suspend")},
		{"installation", installationPayload("deleted")},
		{"installation_repositories", removedPayload(repositoryID)},
		{"pull_request", []byte(`{"action":"opened","number":1}`)},
		{"push", []byte(`{"ref":"refs/heads/main","after":"\u0000","head_commit":{"id":7}}`)},
		{"push", []byte(`not json`)},
	} {
		// mode 0 signs the body, 1 sends sig as given, 2 sends none.
		f.Add(seed.event, "72d3162e-cc78-11e3-81ab-4c9367dc0958", seed.body, uint8(0), "")
		f.Add(seed.event, "72d3162e-cc78-11e3-81ab-4c9367dc0958", seed.body, uint8(1), "sha256=00")
	}
	f.Add("push", "d", []byte(`{}`), uint8(2), "")
	f.Fuzz(func(t *testing.T, event, delivery string, body []byte, mode uint8, sig string) {
		switch mode % 3 {
		case 0:
			sig = sign(body)
		case 2:
			sig = ""
		}
		valid := sig == sign(body)
		deliveries := func() int {
			var n int
			if err := fx.pool.QueryRow(context.Background(), `SELECT count(*) FROM webhook_deliveries`).Scan(&n); err != nil {
				t.Fatal(err)
			}
			return n
		}
		before := deliveries()
		w := fx.do(delivery, event, sig, body)
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d %s", event, body, w.Code, w.Body)
		}
		if !valid {
			if w.Code != http.StatusUnauthorized {
				t.Fatalf("unsigned %s: %d, want 401", event, w.Code)
			}
			if after := deliveries(); after != before {
				t.Fatalf("unsigned %s wrote %d deliveries", event, after-before)
			}
		}
	})
}
