-- name: ImageUpsert :one
-- Records a pushed image. A rebuild pushes the same repository:tag again, which
-- updates the row (keeping its id) instead of failing.
INSERT INTO images (id, project_id, build_id, repository, tag, digest, size_bytes)
VALUES (@id, @project_id, sqlc.narg(build_id), @repository, @tag, @digest, sqlc.narg(size_bytes))
ON CONFLICT (repository, tag) DO UPDATE
SET build_id = excluded.build_id,
    digest = excluded.digest,
    size_bytes = excluded.size_bytes
RETURNING *;

-- name: ImageGetByID :one
SELECT * FROM images WHERE id = @id;

-- name: ImageListByProject :many
SELECT * FROM images
WHERE project_id = @project_id
ORDER BY created_at DESC, id DESC
LIMIT @max_rows;

-- name: ImageDelete :execrows
-- Fails while a deployment or an instance still uses the image.
DELETE FROM images WHERE id = @id;

-- name: ImageList :many
-- Newest first, optionally one project's, paged by id: @before is the last id
-- of the previous page (uuid.Nil for the first page).
SELECT * FROM images
WHERE (sqlc.narg(project_id)::uuid IS NULL OR project_id = sqlc.narg(project_id)::uuid)
  AND (@before::uuid = '00000000-0000-0000-0000-000000000000' OR id < @before::uuid)
ORDER BY id DESC
LIMIT @max_rows;
