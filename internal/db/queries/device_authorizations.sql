-- name: DeviceAuthorizationCreate :one
-- Fails on device_authorizations_user_code_pending_idx when another
-- undecided authorization holds @user_code: the caller draws again.
INSERT INTO device_authorizations (id, device_code_hash, user_code, client_name, expires_at)
VALUES (@id, @device_code_hash, @user_code, @client_name, @expires_at)
RETURNING *;

-- name: DeviceAuthorizationGetPendingByUserCode :one
-- The authorization a person typed the code of, while nobody has decided
-- on it and it has not expired.
SELECT * FROM device_authorizations
WHERE user_code = @user_code AND approved_at IS NULL AND denied_at IS NULL
  AND consumed_at IS NULL AND expires_at > @now;

-- name: DeviceAuthorizationApprove :one
-- No row: the code is unknown, expired or already decided.
UPDATE device_authorizations SET approved_at = @now::timestamptz, user_id = @user_id
WHERE user_code = @user_code AND approved_at IS NULL AND denied_at IS NULL
  AND consumed_at IS NULL AND expires_at > @now
RETURNING *;

-- name: DeviceAuthorizationDeny :one
-- No row: the code is unknown, expired or already decided.
UPDATE device_authorizations SET denied_at = @now::timestamptz, user_id = @user_id
WHERE user_code = @user_code AND approved_at IS NULL AND denied_at IS NULL
  AND consumed_at IS NULL AND expires_at > @now
RETURNING *;

-- name: DeviceAuthorizationGetByHashForUpdate :one
-- The authorization a polling device holds the code of, locked so that two
-- concurrent polls cannot both collect its token.
SELECT * FROM device_authorizations WHERE device_code_hash = @device_code_hash FOR UPDATE;

-- name: DeviceAuthorizationPolled :exec
UPDATE device_authorizations SET last_polled_at = @now::timestamptz WHERE id = @id;

-- name: DeviceAuthorizationConsume :exec
-- The poll collected its token: the device code yields nothing more.
UPDATE device_authorizations SET consumed_at = @now::timestamptz, token_id = @token_id WHERE id = @id;

-- name: DeviceAuthorizationDeleteExpired :execrows
-- Pruning: an expired authorization can no longer be approved or polled.
DELETE FROM device_authorizations WHERE expires_at < @before;
