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
-- Domains to (re)check, least recently checked first.
SELECT * FROM domains
WHERE status <> 'verified'
  AND (last_checked_at IS NULL OR last_checked_at < @checked_before::timestamptz)
ORDER BY last_checked_at NULLS FIRST, id
LIMIT @max_rows;

-- name: DomainSetVerified :one
-- A unique violation on domains_name_verified_idx means another project has
-- already verified this name.
UPDATE domains
SET status = 'verified',
    verified_at = now(),
    last_checked_at = now(),
    failure_reason = NULL,
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
