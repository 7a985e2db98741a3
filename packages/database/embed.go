// Package database carries the schema's SQL migrations into the Go binary.
// The migrations are written by drizzle-kit from schema.ts (see README.md
// here); `zeitwork migrate` applies these same files, so servers need no Node.
package database

import (
	"embed"
	"io/fs"
)

//go:embed migrations/*.sql migrations/meta/_journal.json
var files embed.FS

// Migrations is the drizzle migrations folder: the .sql files and
// meta/_journal.json, which orders them.
func Migrations() fs.FS {
	sub, err := fs.Sub(files, "migrations")
	if err != nil {
		panic(err) // the embed pattern above guarantees the folder exists
	}
	return sub
}
