-- name: BuildLogInsert :exec
INSERT INTO build_logs (id, build_id, stream, line)
VALUES (@id, @build_id, @stream, @line);

-- name: BuildLogCopy :copyfrom
-- Bulk insert for a builder flushing buffered lines.
INSERT INTO build_logs (id, build_id, stream, line)
VALUES (@id, @build_id, @stream, @line);

-- name: BuildLogListByBuild :many
-- Lines after @after_id in order (uuid.Nil for the start): ids are UUIDv7.
SELECT * FROM build_logs
WHERE build_id = @build_id AND id > @after_id
ORDER BY id
LIMIT @max_rows;

-- name: BuildLogNotify :exec
-- Wakes followers of a build's log (LISTEN build_logs) after a flush.
SELECT pg_notify('build_logs', @build_id::text);
