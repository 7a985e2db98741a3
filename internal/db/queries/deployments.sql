-- name: DeploymentCreate :one
INSERT INTO deployments (
    id, project_id, source_type,
    github_commit_sha, github_ref, commit_message, source_archive_key,
    replicas, created_by_user_id, environment, pushed_by
) VALUES (
    @id, @project_id, @source_type,
    sqlc.narg(github_commit_sha), sqlc.narg(github_ref), sqlc.narg(commit_message), sqlc.narg(source_archive_key),
    @replicas, sqlc.narg(created_by_user_id), @environment, sqlc.narg(pushed_by)
)
RETURNING *;

-- name: DeploymentGetByID :one
SELECT * FROM deployments WHERE id = @id;

-- name: DeploymentGetForUpdate :one
SELECT * FROM deployments WHERE id = @id FOR UPDATE;

-- name: DeploymentListByProject :many
-- Newest first; @created_before pages backwards (pass a future time for the first page).
SELECT * FROM deployments
WHERE project_id = @project_id AND created_at < @created_before
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- name: DeploymentGetActiveByProject :one
-- The project's live deployment; active previews are not it.
SELECT * FROM deployments
WHERE project_id = @project_id AND status = 'active' AND environment = 'production';

-- name: DeploymentListByStatus :many
SELECT * FROM deployments
WHERE status = @status
ORDER BY created_at, id
LIMIT @max_rows;

-- name: DeploymentSetStatus :one
-- Moves the deployment to @status if it is still in one of @from_statuses and
-- stamps that phase's timestamp; no row means someone else moved it first.
-- @failure_reason is required for 'failed', @stop_at for 'retiring'.
-- At most one deployment per project is 'active': retire the old one first,
-- in the same transaction.
UPDATE deployments
SET status = @status::text,
    failure_reason = CASE WHEN @status::text = 'failed' THEN sqlc.narg(failure_reason)::text ELSE failure_reason END,
    stop_at = CASE WHEN @status::text = 'retiring' THEN sqlc.narg(stop_at)::timestamptz ELSE stop_at END,
    building_at = CASE WHEN @status::text = 'building' THEN now() ELSE building_at END,
    deploying_at = CASE WHEN @status::text = 'deploying' THEN now() ELSE deploying_at END,
    active_at = CASE WHEN @status::text = 'active' THEN now() ELSE active_at END,
    retiring_at = CASE WHEN @status::text = 'retiring' THEN now() ELSE retiring_at END,
    stopped_at = CASE WHEN @status::text = 'stopped' THEN now() ELSE stopped_at END,
    failed_at = CASE WHEN @status::text = 'failed' THEN now() ELSE failed_at END,
    updated_at = now()
WHERE id = @id AND status = ANY(@from_statuses::text[])
RETURNING *;

-- name: DeploymentSetImage :one
UPDATE deployments
SET image_id = @image_id::uuid, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DeploymentListRetiringDue :many
-- Retiring deployments whose grace period is over, oldest first.
SELECT * FROM deployments
WHERE status = 'retiring' AND stop_at <= now()
ORDER BY stop_at
LIMIT @max_rows;

-- name: DeploymentExistsForCommit :one
-- Whether a deployment of this commit exists in @environment: a push webhook
-- does not build a commit twice. A production deployment counts whatever
-- became of it (going back to it is a rollback); a preview counts only for
-- its own branch (@github_ref) and while it is not on its way out, so that a
-- branch pushed back to an earlier commit previews that commit again.
SELECT EXISTS (
    SELECT 1 FROM deployments
    WHERE project_id = @project_id AND github_commit_sha = @github_commit_sha
      AND environment = @environment::text
      AND (@environment::text = 'production'
           OR (github_ref = sqlc.narg(github_ref)::text AND status IN ('queued', 'building', 'deploying', 'active')))
);

-- name: DeploymentGetForMember :one
-- The deployment @id when @user_id is a member of the organisation owning
-- its project, with that project's slug and what its latest build detected.
SELECT sqlc.embed(deployments),
       projects.slug AS project_slug,
       COALESCE((SELECT builds.detected_kind FROM builds
                 WHERE builds.deployment_id = deployments.id
                 ORDER BY builds.attempt DESC LIMIT 1), '')::text AS detected_kind
FROM deployments
JOIN projects ON projects.id = deployments.project_id
JOIN organisation_members ON organisation_members.organisation_id = projects.organisation_id
WHERE deployments.id = @id AND organisation_members.user_id = @user_id;

-- name: DeploymentListForMember :many
-- A page of the deployments @user_id may see (of one environment, when
-- @environment is not null), newest first, before the id @before (null:
-- from the newest).
SELECT sqlc.embed(deployments),
       projects.slug AS project_slug,
       COALESCE((SELECT builds.detected_kind FROM builds
                 WHERE builds.deployment_id = deployments.id
                 ORDER BY builds.attempt DESC LIMIT 1), '')::text AS detected_kind
FROM deployments
JOIN projects ON projects.id = deployments.project_id
JOIN organisation_members ON organisation_members.organisation_id = projects.organisation_id
WHERE organisation_members.user_id = @user_id
  AND (sqlc.narg(environment)::text IS NULL OR deployments.environment = sqlc.narg(environment)::text)
  AND (sqlc.narg(before)::uuid IS NULL OR deployments.id < sqlc.narg(before)::uuid)
ORDER BY deployments.id DESC
LIMIT @max;

-- name: DeploymentListForMemberOfProject :many
-- DeploymentListForMember for one project: its own query, so that the
-- plan walks that project's deployments (deployments_project_id_id_idx)
-- rather than everyone's.
SELECT sqlc.embed(deployments),
       projects.slug AS project_slug,
       COALESCE((SELECT builds.detected_kind FROM builds
                 WHERE builds.deployment_id = deployments.id
                 ORDER BY builds.attempt DESC LIMIT 1), '')::text AS detected_kind
FROM deployments
JOIN projects ON projects.id = deployments.project_id
JOIN organisation_members ON organisation_members.organisation_id = projects.organisation_id
WHERE organisation_members.user_id = @user_id
  AND deployments.project_id = @project_id
  AND (sqlc.narg(environment)::text IS NULL OR deployments.environment = sqlc.narg(environment)::text)
  AND (sqlc.narg(before)::uuid IS NULL OR deployments.id < sqlc.narg(before)::uuid)
ORDER BY deployments.id DESC
LIMIT @max;

-- name: DeploymentListPreviewsOfRef :many
-- The previews of one branch of a project in one of @statuses, oldest
-- first: a new preview retires the older active ones, a deleted branch
-- stops them all.
SELECT * FROM deployments
WHERE project_id = @project_id AND environment = 'preview' AND github_ref = @github_ref
  AND status = ANY(@statuses::text[])
ORDER BY id;

-- name: DeploymentRetirePreviewsOfRef :many
-- Retires the deploying and active previews of one branch, to stop at
-- @stop_at; returns the ones it moved.
UPDATE deployments
SET status = 'retiring', stop_at = @stop_at, retiring_at = now(), updated_at = now()
WHERE project_id = @project_id AND environment = 'preview' AND github_ref = @github_ref
  AND status IN ('deploying', 'active')
RETURNING *;

-- name: DeploymentAddReplica :one
-- One more instance for good: healing keeps the deployment at the new count.
UPDATE deployments SET replicas = replicas + 1, updated_at = now()
WHERE id = @id
RETURNING *;
