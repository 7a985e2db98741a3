-- name: SessionCreate :one
INSERT INTO sessions (id, user_id, token_hash, expires_at)
VALUES (@id, @user_id, @token_hash, @expires_at)
RETURNING *;

-- name: SessionGetLiveByHash :one
-- The session a cookie names, while it is neither revoked nor expired.
SELECT * FROM sessions
WHERE token_hash = @token_hash AND revoked_at IS NULL AND expires_at > now();

-- name: SessionRevoke :execrows
UPDATE sessions SET revoked_at = now()
WHERE id = @id AND revoked_at IS NULL;

-- name: SessionListLiveByUser :many
-- A page of @user_id's live sessions, oldest first, after the id @after.
SELECT * FROM sessions
WHERE user_id = @user_id AND revoked_at IS NULL AND expires_at > now() AND id > @after
ORDER BY id
LIMIT @max;

-- name: SessionRevokeOwn :execrows
-- Only the session's owner revokes it this way: another user's id matches
-- nothing.
UPDATE sessions SET revoked_at = now()
WHERE id = @id AND user_id = @user_id AND revoked_at IS NULL AND expires_at > now();
