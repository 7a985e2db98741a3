package webhook

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	gh "github.com/google/go-github/v93/github"
	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/zeitwork/zeitwork/internal/build"
	"github.com/zeitwork/zeitwork/internal/db"
	"github.com/zeitwork/zeitwork/internal/deployment"
	"github.com/zeitwork/zeitwork/internal/project"
)

const zeroSHA = "0000000000000000000000000000000000000000"

var shaRe = regexp.MustCompile(`^[0-9a-f]{40}$`)

// push deploys the pushed commit to every project that builds this
// repository: to production for a project whose production branch it is,
// as a preview of the branch for the others. A deleted branch stops its
// previews.
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
	case !isBranch || branch == "":
		return ignored("ref %q is not a branch", ev.GetRef()), nil
	case project.BranchProblem(branch) != "":
		// Git refuses such names, so GitHub never sends them; and a NUL
		// could not be stored.
		return failed("push", fmt.Errorf("branch %q is not a valid branch name", branch)), nil
	case ev.GetDeleted():
		return rc.branchDeleted(ctx, tx, &ev, branch)
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
	ref := ev.GetRef()
	// Postgres text cannot hold NUL, which JSON can.
	base := build.Source{CommitSHA: sha, Ref: ref, CommitMessage: strings.ReplaceAll(ev.GetHeadCommit().GetMessage(), "\x00", ""), PushedBy: pusher(&ev)}
	var out outcome
	for _, p := range projects {
		src := base
		src.Environment = deployment.EnvironmentProduction
		if p.Branch != branch {
			src.Environment = deployment.EnvironmentPreview
		}
		// Locked so that two deliveries of one commit (GitHub sends one
		// per push, but a re-push of the same commit is another) cannot
		// both find it undeployed.
		if _, err := q.ProjectGetForUpdate(ctx, p.ID); err != nil {
			return outcome{}, fmt.Errorf("lock project %s: %w", p.Slug, err)
		}
		exists, err := q.DeploymentExistsForCommit(ctx, db.DeploymentExistsForCommitParams{
			ProjectID: p.ID, GithubCommitSha: &sha, Environment: string(src.Environment), GithubRef: &ref,
		})
		if err != nil {
			return outcome{}, fmt.Errorf("deployments of %s at %s: %w", p.Slug, sha, err)
		}
		if exists {
			continue
		}
		req, err := build.Request(ctx, tx, rc.queue, p.ID, src, nil)
		if errors.Is(err, build.ErrInvalidSource) {
			return failed("push", err), nil
		}
		if err != nil {
			return outcome{}, fmt.Errorf("deploy %s at %s: %w", p.Slug, sha, err)
		}
		rc.log.InfoContext(ctx, "push deploys", "project", p.Slug, "commit", sha, "ref", ref, "environment", src.Environment,
			"pusher", src.PushedBy, "deployment", req.Deployment.ID)
		out.deployments = append(out.deployments, req.Deployment.ID)
	}
	if len(out.deployments) == 0 {
		return ignored("commit %s is already deployed", sha), nil
	}
	out.status = StatusProcessed
	return out, nil
}

// branchDeletedReason is the failure reason of a preview whose branch was
// deleted while it was queued or building.
const branchDeletedReason = "its branch was deleted"

// branchDeleted stops the previews of a deleted branch: their builds are
// cancelled, and the ones deploying or running retire at once (the
// operator stops their instances). A project's production branch being
// deleted changes nothing: the project keeps serving what it serves.
func (rc *Receiver) branchDeleted(ctx context.Context, tx pgx.Tx, ev *gh.PushEvent, branch string) (outcome, error) {
	if ev.GetInstallation().GetID() == 0 || ev.GetRepo().GetID() == 0 {
		return ignored("branch deletion names no installation or repository"), nil
	}
	q := db.New(tx)
	projects, err := q.GithubInstallationListProjectsByRepository(ctx, db.GithubInstallationListProjectsByRepositoryParams{
		GithubInstallationID: ev.GetInstallation().GetID(), GithubRepositoryID: ev.GetRepo().GetID(),
	})
	if err != nil {
		return outcome{}, fmt.Errorf("projects of repository %d: %w", ev.GetRepo().GetID(), err)
	}
	ref, stopped := ev.GetRef(), 0
	for _, p := range projects {
		if p.Branch == branch {
			continue
		}
		// Locked like a push, so a push of the branch racing its deletion
		// is either stopped here or comes after.
		if _, err := q.ProjectGetForUpdate(ctx, p.ID); err != nil {
			return outcome{}, fmt.Errorf("lock project %s: %w", p.Slug, err)
		}
		n, err := stopPreviews(ctx, tx, p.ID, ref)
		if err != nil {
			return outcome{}, fmt.Errorf("stop previews of %s in %s: %w", ref, p.Slug, err)
		}
		if n > 0 {
			rc.log.InfoContext(ctx, "branch deleted, previews stopped", "project", p.Slug, "ref", ref, "count", n)
		}
		stopped += n
	}
	if stopped == 0 {
		return ignored("branch %q deleted: no preview of it runs", branch), nil
	}
	return outcome{status: StatusProcessed}, nil
}

// stopPreviews stops every preview of ref in project and returns how many.
// Builds are cancelled first: one that finishes meanwhile has moved its
// deployment to deploying, which the retirement that follows catches.
func stopPreviews(ctx context.Context, tx pgx.Tx, project uuid.UUID, ref string) (int, error) {
	deps := deployment.Store{DB: tx}
	building, err := deps.ListPreviews(ctx, project, ref, deployment.StatusQueued, deployment.StatusBuilding)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, d := range building {
		err := build.NewStore(tx).CancelDeployment(ctx, d.ID, branchDeletedReason)
		switch {
		case errors.Is(err, build.ErrDeploymentMoved):
		case err != nil:
			return 0, err
		default:
			n++
		}
	}
	retired, err := deps.RetirePreviews(ctx, project, ref, time.Now())
	if err != nil {
		return 0, err
	}
	return n + len(retired), nil
}

// pusher is the GitHub login that pushed, or "" when the payload has none
// that looks like one.
func pusher(ev *gh.PushEvent) string {
	login := ev.GetSender().GetLogin()
	if login == "" {
		login = ev.GetPusher().GetName()
	}
	if len(login) > maxLogin || !printable(login) {
		return ""
	}
	return login
}

// maxLogin is well above GitHub's 39 characters for a login.
const maxLogin = 100

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
