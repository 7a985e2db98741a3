-- name: RateLimitCounterHit :one
-- Counts one request against @key's window and returns the window's count
-- so far, this one included: one round trip, atomic across API processes.
INSERT INTO rate_limit_counters (key, window_start, count)
VALUES (@key, @window_start, 1)
ON CONFLICT (key, window_start) DO UPDATE SET count = rate_limit_counters.count + 1
RETURNING count;

-- name: RateLimitCounterDeleteBefore :execrows
-- Pruning: windows that started before @before are over.
DELETE FROM rate_limit_counters WHERE window_start < @before;
