// Package migration applies the drizzle-generated schema migrations from Go,
// recording them in drizzle's own journal table so that `zeitwork migrate`
// and `npx drizzle-kit migrate` agree about what has been applied: either can
// run first, and the other is then a no-op.
package migration

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io/fs"
	"regexp"
	"sort"
	"strings"
)

// Migration is one drizzle migration file.
type Migration struct {
	Tag string // file name without .sql, e.g. "0000_init"
	// When is the journal's "when" (Unix milliseconds). Drizzle stores it as
	// created_at and treats it as the migration's position: a migration is
	// pending when its When is later than the newest created_at recorded.
	When int64
	// Hash is sha256 of the file, hex, exactly as drizzle computes it.
	Hash string
	// Statements are the file split on drizzle's breakpoint marker.
	Statements []string
}

const breakpoint = "--> statement-breakpoint"

type journal struct {
	Dialect string `json:"dialect"`
	Entries []struct {
		Idx  int    `json:"idx"`
		When int64  `json:"when"`
		Tag  string `json:"tag"`
	} `json:"entries"`
}

// Load reads meta/_journal.json and the migration files it lists from fsys.
func Load(fsys fs.FS) ([]Migration, error) {
	raw, err := fs.ReadFile(fsys, "meta/_journal.json")
	if err != nil {
		return nil, fmt.Errorf("read migration journal: %w", err)
	}
	var j journal
	if err := json.Unmarshal(raw, &j); err != nil {
		return nil, fmt.Errorf("parse migration journal: %w", err)
	}
	if j.Dialect != "postgresql" {
		return nil, fmt.Errorf("migration journal is for dialect %q, want postgresql", j.Dialect)
	}
	sort.Slice(j.Entries, func(a, b int) bool { return j.Entries[a].Idx < j.Entries[b].Idx })

	out := make([]Migration, 0, len(j.Entries))
	for i, e := range j.Entries {
		if i > 0 && e.When <= out[i-1].When {
			// Drizzle orders by "when"; a journal out of order would make it
			// skip a migration silently.
			return nil, fmt.Errorf("migration %s: journal time %d is not after %s's", e.Tag, e.When, out[i-1].Tag)
		}
		body, err := fs.ReadFile(fsys, e.Tag+".sql")
		if err != nil {
			return nil, fmt.Errorf("read migration %s: %w", e.Tag, err)
		}
		sum := sha256.Sum256(body)
		out = append(out, Migration{
			Tag:        e.Tag,
			When:       e.When,
			Hash:       hex.EncodeToString(sum[:]),
			Statements: strings.Split(string(body), breakpoint),
		})
	}
	return out, nil
}

var createRe = regexp.MustCompile(`(?i)CREATE\s+(?:UNLOGGED\s+)?(TABLE|TYPE)\s+(?:IF\s+NOT\s+EXISTS\s+)?(?:/\*[^*]*\*/\s*)?(?:"?(\w+)"?\.)?"?(\w+)"?`)

// Creates lists the tables and types the migrations create, as
// "schema.name" (schema defaulting to public), so that a database already
// holding objects of those names can be refused before anything runs.
func Creates(ms []Migration) []string {
	seen := map[string]bool{}
	var out []string
	for _, m := range ms {
		for _, s := range m.Statements {
			for _, match := range createRe.FindAllStringSubmatch(s, -1) {
				schema := match[2]
				if schema == "" {
					schema = "public"
				}
				name := schema + "." + match[3]
				if !seen[name] {
					seen[name] = true
					out = append(out, name)
				}
			}
		}
	}
	return out
}
