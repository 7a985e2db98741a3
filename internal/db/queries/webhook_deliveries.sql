-- name: WebhookDeliveryInsert :one
-- No row: this X-GitHub-Delivery was seen before and must not be acted on again.
INSERT INTO webhook_deliveries (id, delivery_id, event, payload_sha256)
VALUES (@id, @delivery_id, @event, @payload_sha256)
ON CONFLICT (delivery_id) DO NOTHING
RETURNING *;

-- name: WebhookDeliveryGetByDeliveryID :one
SELECT * FROM webhook_deliveries WHERE delivery_id = @delivery_id;

-- name: WebhookDeliverySetStatus :one
-- Ends a delivery as 'processed', 'ignored' or 'failed' (with @error).
UPDATE webhook_deliveries
SET status = @status, error = sqlc.narg(error), processed_at = now()
WHERE id = @id
RETURNING *;

-- name: WebhookDeliveryDeleteBefore :execrows
-- Pruning: deliveries older than GitHub's redelivery window are of no use.
DELETE FROM webhook_deliveries WHERE received_at < @received_before;
