package webhook

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	gh "github.com/google/go-github/v93/github"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/db"
)

// PreviewsNotBuilt is why a push to a branch other than a project's
// production branch is ignored: a preview deployment needs a deployment
// kind and per-branch hosts the schema does not have yet.
const PreviewsNotBuilt = "preview deployments are not built yet"

const zeroSHA = "0000000000000000000000000000000000000000"

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// push deploys the pushed commit to every project that builds this
// repository's pushed branch.
func (rc *Receiver) push(ctx context.Context, tx pgx.Tx, payload []byte) (outcome, error) {
	var ev gh.PushEvent
	if err := decode(payload, &ev); err != nil {
		return failed("push", err), nil
	}
	branch, isBranch := strings.CutPrefix(ev.GetRef(), "refs/heads/")
	sha := ev.GetHeadCommit().GetID()
	if sha == "" {
		sha = ev.GetAfter()
	}
	switch {
	case ev.GetDeleted():
		return ignored("branch deleted"), nil
	case !isBranch || branch == "":
		return ignored("ref %q is not a branch", ev.GetRef()), nil
	case sha == "" || sha == zeroSHA:
		return ignored("push has no head commit"), nil
	case !shaRe.MatchString(sha):
		return failed("push", fmt.Errorf("head commit %q is not 40 lower-case hex digits", sha)), nil
	case ev.GetInstallation().GetID() == 0 || ev.GetRepo().GetID() == 0:
		return ignored("push names no installation or repository"), nil
	}
	q := db.New(tx)
	projects, err := q.GithubInstallationListProjectsByRepository(ctx, db.GithubInstallationListProjectsByRepositoryParams{
		GithubInstallationID: ev.GetInstallation().GetID(), GithubRepositoryID: ev.GetRepo().GetID(),
	})
	if err != nil {
		return outcome{}, fmt.Errorf("projects of repository %d: %w", ev.GetRepo().GetID(), err)
	}
	if len(projects) == 0 {
		return ignored("no project builds %q through an active installation", ev.GetRepo().GetFullName()), nil
	}
	// Postgres text cannot hold NUL, which JSON can.
	src := build.Source{CommitSHA: sha, Ref: ev.GetRef(), CommitMessage: strings.ReplaceAll(ev.GetHeadCommit().GetMessage(), "\x00", "")}
	var out outcome
	onBranch := 0
	for _, p := range projects {
		if p.Branch != branch {
			continue
		}
		onBranch++
		// Locked so that two deliveries of one commit (GitHub sends one
		// per push, but a re-push of the same commit is another) cannot
		// both find it undeployed.
		if _, err := q.ProjectGetForUpdate(ctx, p.ID); err != nil {
			return outcome{}, fmt.Errorf("lock project %s: %w", p.Slug, err)
		}
		exists, err := q.DeploymentExistsForCommit(ctx, db.DeploymentExistsForCommitParams{ProjectID: p.ID, GithubCommitSha: &sha})
		if err != nil {
			return outcome{}, fmt.Errorf("deployments of %s at %s: %w", p.Slug, sha, err)
		}
		if exists {
			continue
		}
		// Deployments record no pusher (there is no column for it, and a
		// GitHub login is not a Zeitwork user): it is logged instead.
		req, err := build.Request(ctx, tx, rc.queue, p.ID, src, nil)
		if errors.Is(err, build.ErrInvalidSource) {
			return failed("push", err), nil
		}
		if err != nil {
			return outcome{}, fmt.Errorf("deploy %s at %s: %w", p.Slug, sha, err)
		}
		rc.log.InfoContext(ctx, "push deploys", "project", p.Slug, "commit", sha, "ref", ev.GetRef(),
			"pusher", ev.GetPusher().GetName(), "deployment", req.Deployment.ID)
		out.deployments = append(out.deployments, req.Deployment.ID)
	}
	switch {
	case onBranch == 0:
		// Previews need a schema change (a deployment kind and per-branch
		// hosts) that is not made yet; until then other branches build
		// nothing, and say so.
		return ignored(PreviewsNotBuilt), nil
	case len(out.deployments) == 0:
		return ignored("commit %s is already deployed", sha), nil
	}
	out.status = StatusProcessed
	return out, nil
}

// installation keeps a known installation's state. An installation is
// linked to an organisation by the app's setup flow (the API), not here:
// the webhook does not say which organisation installed it.
func installation(ctx context.Context, tx pgx.Tx, payload []byte) (outcome, error) {
	var ev gh.InstallationEvent
	if err := decode(payload, &ev); err != nil {
		return failed("installation", err), nil
	}
	inst := ev.GetInstallation()
	if inst.GetID() == 0 {
		return failed("installation", errors.New("no installation id")), nil
	}
	q := db.New(tx)
	known, err := q.GithubInstallationGetByGithubID(ctx, inst.GetID())
	if errors.Is(err, pgx.ErrNoRows) {
		return ignored("installation %d is not linked to an organisation", inst.GetID()), nil
	}
	if err != nil {
		return outcome{}, fmt.Errorf("installation %d: %w", inst.GetID(), err)
	}
	switch action := ev.GetAction(); action {
	case "created":
		// Installed again under the same id: refresh the account and
		// make sure it is not left suspended.
		if login, typ := inst.GetAccount().GetLogin(), inst.GetAccount().GetType(); printable(login) && (typ == "User" || typ == "Organization") {
			if _, err := q.GithubInstallationUpsert(ctx, db.GithubInstallationUpsertParams{
				ID: known.ID, GithubInstallationID: known.GithubInstallationID, OrganisationID: known.OrganisationID,
				AccountLogin: login, AccountType: typ,
			}); err != nil {
				return outcome{}, fmt.Errorf("refresh installation %d: %w", inst.GetID(), err)
			}
		}
		return setSuspended(ctx, q, inst.GetID(), nil)
	case "deleted":
		// Projects keep their repository but lose the link (ON DELETE SET
		// NULL), so their pushes are ignored from now on.
		if _, err := q.GithubInstallationDeleteByGithubID(ctx, inst.GetID()); err != nil {
			return outcome{}, fmt.Errorf("delete installation %d: %w", inst.GetID(), err)
		}
		return outcome{status: StatusProcessed}, nil
	case "suspend":
		at := time.Now()
		if s := inst.GetSuspendedAt(); !s.IsZero() {
			at = s.Time
		}
		return setSuspended(ctx, q, inst.GetID(), &at)
	case "unsuspend":
		return setSuspended(ctx, q, inst.GetID(), nil)
	default:
		return ignored("installation action %q is not handled", action), nil
	}
}

func setSuspended(ctx context.Context, q *db.Queries, installationID int64, at *time.Time) (outcome, error) {
	if _, err := q.GithubInstallationSetSuspended(ctx, db.GithubInstallationSetSuspendedParams{
		GithubInstallationID: installationID, SuspendedAt: at,
	}); err != nil {
		return outcome{}, fmt.Errorf("suspend installation %d: %w", installationID, err)
	}
	return outcome{status: StatusProcessed}, nil
}

// installationRepositories detaches projects from repositories the
// installation can no longer read. Added repositories change nothing
// stored: a project connects a repository through the API.
func installationRepositories(ctx context.Context, tx pgx.Tx, payload []byte) (outcome, error) {
	var ev gh.InstallationRepositoriesEvent
	if err := decode(payload, &ev); err != nil {
		return failed("installation_repositories", err), nil
	}
	instID := ev.GetInstallation().GetID()
	if instID == 0 {
		return failed("installation_repositories", errors.New("no installation id")), nil
	}
	switch action := ev.GetAction(); action {
	case "added":
		return ignored("added repositories are connected to projects through the API"), nil
	case "removed":
		var ids []int64
		for _, r := range ev.RepositoriesRemoved {
			if r.GetID() != 0 {
				ids = append(ids, r.GetID())
			}
		}
		n, err := db.New(tx).GithubInstallationDetachRepositories(ctx, db.GithubInstallationDetachRepositoriesParams{
			GithubInstallationID: instID, GithubRepositoryIds: ids,
		})
		if err != nil {
			return outcome{}, fmt.Errorf("detach repositories of installation %d: %w", instID, err)
		}
		if n == 0 {
			return ignored("no project uses the removed repositories"), nil
		}
		return outcome{status: StatusProcessed}, nil
	default:
		return ignored("installation_repositories action %q is not handled", action), nil
	}
}
