-- name: APITokenCreate :one
INSERT INTO api_tokens (id, user_id, name, token_hash)
VALUES (@id, @user_id, @name, @token_hash)
RETURNING *;

-- name: APITokenUseLiveByHash :one
-- The live token a bearer credential names, marked as used now. The mark
-- is written at most once a minute: a write on every request would queue
-- all requests made with one token behind that token's row lock.
WITH live AS (
    SELECT id FROM api_tokens
    WHERE api_tokens.token_hash = sqlc.arg(token_hash)::bytea AND api_tokens.revoked_at IS NULL
), touched AS (
    UPDATE api_tokens SET last_used_at = now()
    WHERE id IN (SELECT id FROM live)
      AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')
)
SELECT * FROM api_tokens WHERE id IN (SELECT id FROM live);

-- name: APITokenListLiveByUser :many
-- A page of @user_id's live tokens, oldest first, after the id @after.
SELECT * FROM api_tokens
WHERE user_id = @user_id AND revoked_at IS NULL AND id > @after
ORDER BY id
LIMIT @max;

-- name: APITokenRevoke :execrows
-- Only the token's owner revokes it: another user's id matches nothing.
UPDATE api_tokens SET revoked_at = now()
WHERE id = @id AND user_id = @user_id AND revoked_at IS NULL;
