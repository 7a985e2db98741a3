-- name: UserCreate :one
INSERT INTO users (id, github_user_id, username, name, email, avatar_url)
VALUES (@id, @github_user_id, @username, sqlc.narg(name), sqlc.narg(email), sqlc.narg(avatar_url))
RETURNING *;

-- name: UserUpsertByGithubID :one
-- Sign-in: creates the user with @id on first sign-in, otherwise refreshes the
-- profile GitHub sent and returns the existing row (and its existing id).
INSERT INTO users (id, github_user_id, username, name, email, avatar_url)
VALUES (@id, @github_user_id, @username, sqlc.narg(name), sqlc.narg(email), sqlc.narg(avatar_url))
ON CONFLICT (github_user_id) DO UPDATE
SET username = excluded.username,
    name = excluded.name,
    email = excluded.email,
    avatar_url = excluded.avatar_url,
    updated_at = now()
RETURNING *;

-- name: UserGetByID :one
SELECT * FROM users WHERE id = @id;

-- name: UserGetByGithubID :one
SELECT * FROM users WHERE github_user_id = @github_user_id;
