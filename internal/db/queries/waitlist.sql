-- name: WaitlistJoin :one
-- No row: the address is already on the list.
INSERT INTO waitlist (id, email, source)
VALUES (@id, lower(@email::text), sqlc.narg(source))
ON CONFLICT (email) DO NOTHING
RETURNING *;

-- name: WaitlistGetByEmail :one
SELECT * FROM waitlist WHERE email = lower(@email::text);

-- name: WaitlistList :many
SELECT * FROM waitlist
ORDER BY created_at, id
LIMIT @max_rows OFFSET @skip_rows;

-- name: WaitlistCount :one
SELECT count(*) FROM waitlist;

-- name: WaitlistDelete :execrows
DELETE FROM waitlist WHERE email = lower(@email::text);
