-- name: BuildCreate :one
INSERT INTO builds (id, deployment_id, attempt)
VALUES (@id, @deployment_id, @attempt)
RETURNING *;

-- name: BuildGetByID :one
SELECT * FROM builds WHERE id = @id;

-- name: BuildListByDeployment :many
SELECT * FROM builds
WHERE deployment_id = @deployment_id
ORDER BY attempt;

-- name: BuildGetLatestByDeployment :one
SELECT * FROM builds
WHERE deployment_id = @deployment_id
ORDER BY attempt DESC
LIMIT 1;

-- name: BuildStart :one
-- Claims a queued build for @builder_id until @deadline_at; no row: not queued.
UPDATE builds
SET status = 'running',
    builder_id = @builder_id::text,
    deadline_at = @deadline_at::timestamptz,
    started_at = now(),
    updated_at = now()
WHERE id = @id AND status = 'queued'
RETURNING *;

-- name: BuildExtendDeadline :execrows
-- The running builder keeps its claim; 0 rows: the build is no longer ours.
UPDATE builds
SET deadline_at = @deadline_at::timestamptz, updated_at = now()
WHERE id = @id AND status = 'running' AND builder_id = @builder_id::text;

-- name: BuildSetDetectedKind :execrows
UPDATE builds
SET detected_kind = @detected_kind::text, updated_at = now()
WHERE id = @id;

-- name: BuildFinish :one
-- Ends a build as 'succeeded', 'failed' (with @failure_reason) or 'cancelled';
-- no row: it had already ended.
UPDATE builds
SET status = @status::text,
    failure_reason = sqlc.narg(failure_reason),
    finished_at = now(),
    updated_at = now()
WHERE id = @id AND status IN ('queued', 'running')
RETURNING *;

-- name: BuildListExpired :many
-- Running builds whose builder stopped extending the deadline.
SELECT * FROM builds
WHERE status = 'running' AND deadline_at < now()
ORDER BY deadline_at
LIMIT @max_rows;

-- name: BuildClaim :one
-- A builder takes the build until @deadline_at, which it keeps extending while
-- it works. A build whose deadline passed has lost its builder (the machine
-- died): another builder may take it over. No row: someone holds it, or it
-- has ended.
UPDATE builds
SET status = 'running',
    builder_id = @builder_id::text,
    deadline_at = @deadline_at::timestamptz,
    started_at = coalesce(started_at, now()),
    updated_at = now()
WHERE id = @id
  AND (status = 'queued' OR (status = 'running' AND deadline_at < now()))
RETURNING *;

-- name: BuildRequeue :execrows
-- Gives a build back after an infrastructure failure, for the task's retry.
UPDATE builds
SET status = 'queued', builder_id = NULL, deadline_at = NULL, updated_at = now()
WHERE id = @id AND status = 'running' AND builder_id = @builder_id::text;
