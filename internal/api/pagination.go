package api

import (
	"encoding/base64"

	"github.com/danielgtaylor/huma/v2"
	"github.com/google/uuid"
)

// page is the query of every list: an opaque cursor from the previous
// page's next_cursor, and how many items to return.
type page struct {
	Cursor string `query:"cursor" doc:"next_cursor of the previous page; empty for the first page"`
	Limit  int32  `query:"limit" minimum:"1" maximum:"100" default:"20" doc:"at most this many items"`
}

// after is the last id of the previous page, which this page follows
// (uuid.Nil: the first page). Lists are ordered by id, a UUIDv7 and so also
// by creation time: oldest first, unless a list says newest first.
func (p page) after() (uuid.UUID, error) {
	if p.Cursor == "" {
		return uuid.Nil, nil
	}
	b, err := base64.RawURLEncoding.DecodeString(p.Cursor)
	if err != nil || len(b) != 16 {
		return uuid.Nil, huma.Error400BadRequest("cursor is not one this API handed out")
	}
	return uuid.UUID(b), nil
}

// fetch is how many rows to ask for: one more than the page, to learn
// whether another page follows.
func (p page) fetch() int32 { return p.Limit + 1 }

// cut trims the extra row of items and returns the cursor of the next
// page, "" on the last.
func cut[T any](p page, items []T, id func(T) uuid.UUID) ([]T, string) {
	if int32(len(items)) <= p.Limit {
		return items, ""
	}
	items = items[:p.Limit]
	last := id(items[len(items)-1])
	return items, base64.RawURLEncoding.EncodeToString(last[:])
}
