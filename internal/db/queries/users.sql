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

-- name: UserSetAdmin :one
-- An admin is admitted: they admit the others.
UPDATE users SET admin = @admin, admitted = admitted OR @admin, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: UserExistsOther :one
-- Whether anyone but @id has signed in: the first user becomes admin.
SELECT EXISTS (SELECT 1 FROM users WHERE id <> @id);

-- name: UserGetByID :one
SELECT * FROM users WHERE id = @id;

-- name: UserGetByGithubID :one
SELECT * FROM users WHERE github_user_id = @github_user_id;

-- name: UserLockSignUp :exec
-- Serialises sign-ins for the rest of the transaction, so that two people
-- signing in to a fresh install cannot both become its first user.
SELECT pg_advisory_xact_lock(hashtext('zeitwork.users.sign_up'));

-- name: UserAdmit :one
-- Lets a user off the waitlist; admitting twice changes nothing.
UPDATE users SET admitted = true, updated_at = now()
WHERE id = @id
RETURNING *;

-- name: UserListWaiting :many
-- Users who signed in and wait for admission, longest waiting first.
SELECT * FROM users
WHERE NOT admitted
ORDER BY created_at, id
LIMIT @max_rows;
