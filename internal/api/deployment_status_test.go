package api

import (
	"net/http"
	"testing"

	"github.com/google/uuid"

	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/id"
)

func TestSetDeploymentStatus(t *testing.T) {
	e := newEnv(t)
	alice := e.signIn(1, "alice")
	p := e.createProject(alice, `{"name":"app"}`)
	img := id.New()
	e.exec(`INSERT INTO images (id, project_id, repository, tag, digest) VALUES ($1, $2, 'r/app', 'v1', 'sha256:' || repeat('a', 64))`, img, p.ID)

	put := func(d Deployment, status string) response {
		t.Helper()
		return e.do("PUT", "/v1/deployments/"+d.ID.String()+"/status", `{"status":"`+status+`"}`, bearer(alice)...)
	}
	ok := func(res response, status int, want deployment.Status) Deployment {
		t.Helper()
		if res.Code != status {
			t.Fatalf("%d %s, want %d", res.Code, res.body, status)
		}
		var d Deployment
		res.decode(t, &d)
		if d.Status != deploymentStatus(want) {
			t.Fatalf("status %s, want %s", d.Status, want)
		}
		return d
	}
	// in makes a deployment of p in status, built or not.
	in := func(status deployment.Status, built bool) Deployment {
		t.Helper()
		d := e.deploy(alice, archive(p, "src.tar.gz"))
		if built {
			e.exec(`UPDATE deployments SET image_id = $1 WHERE id = $2`, img, d.ID)
		}
		e.exec(`UPDATE deployments SET status = $1, stop_at = now() + interval '1 hour',
			failure_reason = CASE WHEN $1 = 'failed' THEN 'build failed' END WHERE id = $2`, string(status), d.ID)
		d.Status = deploymentStatus(status)
		return d
	}
	rollbacks := func(d Deployment) int {
		t.Helper()
		return e.count(`SELECT count(*) FROM river_job WHERE kind = $1 AND args->>'deployment_id' = $2`, deployment.RollbackTask{}.Kind(), d.ID.String())
	}
	status := func(d Deployment) deployment.Status {
		t.Helper()
		got, err := deployment.Store{DB: e.pool()}.Get(t.Context(), d.ID)
		if err != nil {
			t.Fatal(err)
		}
		return got.Status
	}

	t.Run("cancel", func(t *testing.T) {
		for _, from := range []deployment.Status{deployment.StatusQueued, deployment.StatusBuilding} {
			d := in(from, false)
			got := ok(put(d, "cancelled"), http.StatusOK, deployment.StatusFailed)
			if got.FailureReason != cancelReason {
				t.Errorf("%s: failure reason %q", from, got.FailureReason)
			}
			if n := e.count(`SELECT count(*) FROM builds WHERE deployment_id = $1 AND status = 'cancelled'`, d.ID); n != 1 {
				t.Errorf("%s: %d cancelled builds", from, n)
			}
			e.wantProblem(put(d, "cancelled"), http.StatusConflict)
		}
		for _, past := range []deployment.Status{deployment.StatusDeploying, deployment.StatusRetiring, deployment.StatusStopped} {
			d := in(past, true)
			e.wantProblem(put(d, "cancelled"), http.StatusConflict)
			if got := status(d); got != past {
				t.Errorf("refused cancel moved a %s deployment to %s", past, got)
			}
			if n := e.count(`SELECT count(*) FROM builds WHERE deployment_id = $1 AND status = 'cancelled'`, d.ID); n != 0 {
				t.Errorf("refused cancel of a %s deployment cancelled its build", past)
			}
		}
	})

	t.Run("rollback", func(t *testing.T) {
		for _, from := range []deployment.Status{deployment.StatusRetiring, deployment.StatusStopped} {
			d := in(from, true)
			ok(put(d, "active"), http.StatusAccepted, from) // the operator does it
			ok(put(d, "active"), http.StatusAccepted, from)
			if n := rollbacks(d); n != 1 {
				t.Errorf("%s: %d rollback tasks, want 1 (asking twice is one task)", from, n)
			}
			if got := status(d); got != from {
				t.Errorf("the API moved a %s deployment to %s itself", from, got)
			}
		}
		active := in(deployment.StatusActive, true)
		ok(put(active, "active"), http.StatusOK, deployment.StatusActive)
		refused := map[string]Deployment{
			"queued":    in(deployment.StatusQueued, false),
			"deploying": in(deployment.StatusDeploying, true),
			"failed":    in(deployment.StatusFailed, false),
			"imageless": in(deployment.StatusStopped, false),
		}
		for name, d := range refused {
			e.wantProblem(put(d, "active"), http.StatusConflict)
			if n := rollbacks(d); n != 0 {
				t.Errorf("%s: %d rollback tasks", name, n)
			}
		}
		if n := rollbacks(active); n != 0 {
			t.Errorf("active: %d rollback tasks", n)
		}
	})

	t.Run("other statuses", func(t *testing.T) {
		d := in(deployment.StatusStopped, true)
		for _, body := range []string{`{"status":"stopped"}`, `{"status":"failed"}`, `{"status":""}`, `{}`, `{"status":"active","x":1}`} {
			e.wantProblem(e.do("PUT", "/v1/deployments/"+d.ID.String()+"/status", body, bearer(alice)...), http.StatusUnprocessableEntity)
		}
		for _, path := range []string{"/v1/deployments/nope/status", "/v1/deployments/" + uuid.NewString() + "/status"} {
			e.wantProblem(e.do("PUT", path, `{"status":"cancelled"}`, bearer(alice)...), http.StatusNotFound)
		}
	})
}
