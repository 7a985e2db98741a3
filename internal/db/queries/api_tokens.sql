-- name: APITokenCreate :one
INSERT INTO api_tokens (id, user_id, name, token_hash)
VALUES (@id, @user_id, @name, @token_hash)
RETURNING *;

-- name: APITokenUseLiveByHash :one
-- The live token a bearer credential names, marked as used now.
UPDATE api_tokens SET last_used_at = now()
WHERE token_hash = @token_hash AND revoked_at IS NULL
RETURNING *;

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
