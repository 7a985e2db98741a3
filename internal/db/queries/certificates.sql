-- name: CertificatePut :exec
-- The edge's ACME storage: keys are slash-separated paths, and "directories"
-- exist only as key prefixes.
INSERT INTO certificates (key, value, modified_at)
VALUES (@key, @value, now())
ON CONFLICT (key) DO UPDATE
SET value = excluded.value, modified_at = excluded.modified_at;

-- name: CertificateGet :one
SELECT * FROM certificates WHERE key = @key;

-- name: CertificateStat :one
SELECT key, octet_length(value)::bigint AS size_bytes, modified_at
FROM certificates
WHERE key = @key;

-- name: CertificateListByPrefix :many
SELECT key FROM certificates
WHERE starts_with(key, @prefix::text)
ORDER BY key;

-- name: CertificateDelete :execrows
-- Deletes @key and, if it is a "directory", everything below it.
DELETE FROM certificates
WHERE key = @key::text OR starts_with(key, @key::text || '/');

-- name: CertificateExists :one
-- Whether @key is a "file" or a "directory" (a prefix of other keys).
SELECT EXISTS (
  SELECT 1 FROM certificates
  WHERE key = @key::text OR starts_with(key, @key::text || '/')
);

-- name: CertificateListNotSealedWith :many
-- Key rotation: the keys of values that do not start with @prefix (sealed
-- with the newest key), after @after in key order, a batch at a time.
SELECT key, value FROM certificates
WHERE substring(value FROM 1 FOR octet_length(@prefix::bytea)) <> @prefix::bytea
  AND key > @after::text
ORDER BY key
LIMIT @max_rows;

-- name: CertificateReencrypt :execrows
-- Key rotation: replaces a value only if it is still @old_value, so a
-- certificate renewed meanwhile is left to its new, already sealed value.
UPDATE certificates SET value = @value
WHERE key = @key AND value = @old_value;
