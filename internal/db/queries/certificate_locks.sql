-- name: CertificateLockAcquire :one
-- Takes the lock if it is free, expired, or already ours; no row: held by another.
INSERT INTO certificate_locks (name, holder, expires_at)
VALUES (@name, @holder, @expires_at)
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE certificate_locks.expires_at < now() OR certificate_locks.holder = excluded.holder
RETURNING *;

-- name: CertificateLockRefresh :execrows
-- 0 rows: the lock was lost.
UPDATE certificate_locks
SET expires_at = @expires_at
WHERE name = @name AND holder = @holder;

-- name: CertificateLockRelease :execrows
DELETE FROM certificate_locks WHERE name = @name AND holder = @holder;
