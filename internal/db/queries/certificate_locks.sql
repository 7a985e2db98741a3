-- name: CertificateLockAcquire :one
-- Takes the lock if it is free, expired, or already ours; no row: held by
-- another. Expiry is reckoned on the database's clock alone, so the edge
-- replicas' clocks need not agree.
INSERT INTO certificate_locks (name, holder, expires_at)
VALUES (@name, @holder, now() + make_interval(secs => @ttl_seconds::float8))
ON CONFLICT (name) DO UPDATE
SET holder = excluded.holder, expires_at = excluded.expires_at
WHERE certificate_locks.expires_at < now() OR certificate_locks.holder = excluded.holder
RETURNING *;

-- name: CertificateLockRefresh :execrows
-- Extends a lock we hold; 0 rows: the lock was lost (expired and taken).
UPDATE certificate_locks
SET expires_at = now() + make_interval(secs => @ttl_seconds::float8)
WHERE name = @name AND holder = @holder;

-- name: CertificateLockRelease :execrows
DELETE FROM certificate_locks WHERE name = @name AND holder = @holder;
