-- name: OperatorRegister :one
INSERT INTO operators (id, hostname, address, version)
VALUES (@id, @hostname, @address, @version)
RETURNING *;

-- name: OperatorGetByID :one
SELECT * FROM operators WHERE id = @id;

-- name: OperatorHeartbeat :execrows
-- 0 rows: this operator was pruned as stale and must register again.
UPDATE operators SET last_heartbeat_at = now() WHERE id = @id;

-- name: OperatorListAlive :many
SELECT * FROM operators
WHERE last_heartbeat_at > @heartbeat_after
ORDER BY started_at, id;

-- name: OperatorDelete :execrows
DELETE FROM operators WHERE id = @id;

-- name: OperatorDeleteStale :execrows
DELETE FROM operators WHERE last_heartbeat_at < @heartbeat_before;
