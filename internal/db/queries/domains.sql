-- name: DomainCreate :one
INSERT INTO domains (id, project_id, name, verification_token)
VALUES (@id, @project_id, lower(@name::text), @verification_token)
RETURNING *;

-- name: DomainGetByID :one
SELECT * FROM domains WHERE id = @id;

-- name: DomainListByProject :many
SELECT * FROM domains
WHERE project_id = @project_id
ORDER BY name;

-- name: DomainGetVerifiedByName :one
-- Who owns a host name: the edge's routing and on-demand TLS decision.
SELECT * FROM domains
WHERE name = lower(@name::text) AND status = 'verified';

-- name: DomainListVerified :many
SELECT * FROM domains
WHERE status = 'verified'
ORDER BY name;

-- name: DomainListDueForCheck :many
-- Pending domains whose next check is due, least recently checked first.
-- The wait between checks grows with the domain's age (a tenth of it,
-- bounded by @min_interval_secs and @max_interval_secs): a name just added
-- is checked often, since its owner is likely editing DNS right now; one
-- left pending for days is not worth asking about every half minute.
-- Failed domains are not rechecked: their owner asks again by hand.
SELECT * FROM domains
WHERE status = 'pending'
  AND (last_checked_at IS NULL
       OR last_checked_at < now() - least(
            greatest((now() - created_at) / 10, make_interval(secs => sqlc.arg(min_interval_secs)::float8)),
            make_interval(secs => sqlc.arg(max_interval_secs)::float8)))
ORDER BY last_checked_at NULLS FIRST, id
LIMIT @max_rows;

-- name: DomainLockByName :many
-- Every claim on a name, locked in id order: checks of the same name take
-- turns, so reading who owns it and writing the outcome is one step, and
-- two claims can never both pass the check at once.
SELECT * FROM domains
WHERE name = lower(@name::text)
ORDER BY id
FOR UPDATE;

-- name: DomainSetVerified :one
-- A unique violation on domains_name_verified_idx means another project has
-- already verified this name.
UPDATE domains
SET status = 'verified',
    verified_at = now(),
    last_checked_at = now(),
    failure_reason = NULL,
    failed_rechecks = 0,
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DomainSetCheckFailed :one
-- Records a failed check; @status stays 'pending' while retrying, 'failed' to give up.
UPDATE domains
SET status = @status,
    failure_reason = @failure_reason,
    verified_at = NULL,
    last_checked_at = now(),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DomainDelete :execrows
DELETE FROM domains WHERE id = @id AND project_id = @project_id;

-- name: DomainListVerifiedByProjects :many
SELECT * FROM domains
WHERE status = 'verified' AND project_id = ANY(@project_ids::uuid[])
ORDER BY name;

-- name: DomainGetByProjectAndName :one
SELECT * FROM domains
WHERE project_id = @project_id AND name = lower(@name::text);

-- name: DomainPageByProject :many
-- A page of a project's domains after the id @after, oldest first.
SELECT * FROM domains
WHERE project_id = @project_id AND id > @after
ORDER BY id
LIMIT @max_rows;

-- name: DomainListDueForRecheck :many
-- Verified domains not checked for @interval_secs, least recently checked
-- first: a name that no longer points at the edge must stop being served.
SELECT * FROM domains
WHERE status = 'verified'
  AND coalesce(last_checked_at, verified_at) < now() - make_interval(secs => sqlc.arg(interval_secs)::float8)
ORDER BY last_checked_at NULLS FIRST, id
LIMIT @max_rows;

-- name: DomainSetRecheckPassed :one
UPDATE domains
SET failed_rechecks = 0,
    failure_reason = NULL,
    last_checked_at = now(),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DomainSetRecheckFailed :one
-- A failed re-verification of a verified domain that stays verified (and
-- served) for now; the caller fails it at the limit. @increment is 0 for a
-- recheck DNS could not answer, which proves nothing either way.
UPDATE domains
SET failed_rechecks = failed_rechecks + @increment::int,
    failure_reason = @failure_reason,
    last_checked_at = now(),
    updated_at = now()
WHERE id = @id
RETURNING *;

-- name: DomainGetStatusByName :one
-- The on-demand TLS decision: 'verified' if a project has verified the
-- name, else another claim's status; no rows when no project has added it
-- (a name the edge may remember refusing).
SELECT status FROM domains
WHERE name = lower(@name::text)
ORDER BY status = 'verified' DESC
LIMIT 1;
