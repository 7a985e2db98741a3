-- name: SessionCreate :one
INSERT INTO sessions (id, user_id, token_hash, expires_at, user_agent, last_seen_at)
VALUES (@id, @user_id, @token_hash, @expires_at, sqlc.narg(user_agent), now())
RETURNING *;

-- name: SessionUseLiveByHash :one
-- The session a cookie names, while it is neither revoked nor expired,
-- marked as seen now. The mark is written at most once a minute: a write on
-- every request would queue a browser's requests behind its row lock.
WITH live AS (
    SELECT id FROM sessions
    WHERE sessions.token_hash = sqlc.arg(token_hash)::bytea AND sessions.revoked_at IS NULL AND sessions.expires_at > now()
), touched AS (
    UPDATE sessions SET last_seen_at = now()
    WHERE id IN (SELECT id FROM live)
      AND (last_seen_at IS NULL OR last_seen_at < now() - interval '1 minute')
)
SELECT * FROM sessions WHERE id IN (SELECT id FROM live);

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
