package webhook_test

import (
	"context"
	"encoding/json"
	"net/http"
	"testing"

	"github.com/zeitwork/zeitwork/internal/httpapi"
	"github.com/zeitwork/zeitwork/internal/zlog"
)

// FuzzHandler: whatever the body and headers, the receiver (behind the
// request id middleware, as the API mounts it) answers without a 5xx or a
// panic and with X-Request-Id; every error is the JSON error body naming
// that request id; a 4xx writes nothing, save the record of an authentic
// delivery whose payload did not parse (a 422, kept to be looked at); and
// nothing is recorded unless the signature is valid.
func FuzzHandler(f *testing.F) {
	fx := newFixture(f)
	fx.h = httpapi.Server{Log: zlog.Discard()}.Middleware(fx.h)
	snapshot := func(t *testing.T) (deliveries int, rest string) {
		t.Helper()
		if err := fx.pool.QueryRow(context.Background(), `SELECT
			(SELECT count(*) FROM webhook_deliveries),
			(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM deployments t) ||
			(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM builds t) ||
			(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM river_job t) ||
			(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM projects t) ||
			(SELECT md5(coalesce(string_agg(t::text, ',' ORDER BY t::text), '')) FROM github_installations t)`).Scan(&deliveries, &rest); err != nil {
			t.Fatal(err)
		}
		return deliveries, rest
	}
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
		{"push", pushPayload("refs/heads/main\x00", sha1, "nul in the ref")},
		{"push", pushPayload("refs/heads/main", sha2, "nul\x00in the message")},
		{"push", pushPayload("refs/heads/main", "\x00"+sha1[1:], "nul in the sha")},
		{"installation", []byte(`{"action":"created\u0000","installation":{"id":4242,"account":{"login":"\u0000"}}}`)},
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
		deliveries, rest := snapshot(t)
		w := fx.do(delivery, event, sig, body)
		if w.Code >= 500 {
			t.Fatalf("%s %q: %d %s", event, body, w.Code, w.Body)
		}
		rid := w.Header().Get("X-Request-Id")
		if rid == "" {
			t.Errorf("%s: %d without X-Request-Id", event, w.Code)
		}
		if !valid && w.Code != http.StatusUnauthorized {
			t.Fatalf("unsigned %s: %d, want 401", event, w.Code)
		}
		if w.Code < 400 {
			return
		}
		var e httpapi.ErrorBody
		if err := json.Unmarshal(w.Body.Bytes(), &e); err != nil || e.Code == "" || e.Error == "" || e.RequestID != rid ||
			w.Header().Get("Content-Type") != "application/json" {
			t.Fatalf("%s: %d error body %s (%v)", event, w.Code, w.Body, err)
		}
		afterDeliveries, afterRest := snapshot(t)
		if afterRest != rest {
			t.Fatalf("%s: %d changed deployments, builds, tasks, projects or installations", event, w.Code)
		}
		if recorded := afterDeliveries - deliveries; recorded != 0 && (recorded != 1 || w.Code != http.StatusUnprocessableEntity || !valid) {
			t.Fatalf("%s: %d recorded %d deliveries", event, w.Code, recorded)
		}
	})
}
