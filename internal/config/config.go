// Package config parses each role's configuration from the environment with
// caarlos0/env. Every role has one struct (see roles.go); defaults live in its
// tags, and a bad or missing variable stops the role at start with an error
// that names the variable, never halfway through its work.
package config

import (
	"errors"
	"fmt"
	"os"
	"reflect"
	"sort"
	"strings"

	"github.com/caarlos0/env/v11"
)

// Parse reads the process environment into a new T.
func Parse[T any]() (T, error) {
	return ParseFrom[T](environ(os.Environ()))
}

// ParseFrom reads the given environment into a new T; tests use it so they
// never depend on the machine's variables.
func ParseFrom[T any](environment map[string]string) (T, error) {
	var cfg T
	err := env.ParseWithOptions(&cfg, env.Options{Environment: environment})
	if err != nil {
		return cfg, describe(err, reflect.TypeOf(cfg))
	}
	return cfg, nil
}

// Error lists every variable that is wrong, so an operator fixes them in one go.
type Error struct {
	Problems []Problem
}

// Problem is one bad variable.
type Problem struct {
	Var    string // the environment variable, e.g. DATABASE_URL
	Reason string
}

func (e *Error) Error() string {
	parts := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		parts[i] = p.Var + ": " + p.Reason
	}
	return "invalid configuration: " + strings.Join(parts, "; ")
}

// Vars returns the names of the bad variables.
func (e *Error) Vars() []string {
	vars := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		vars[i] = p.Var
	}
	return vars
}

// describe turns caarlos0/env's errors, some of which name a Go field rather
// than the variable, into Problems that always name the variable.
func describe(err error, t reflect.Type) error {
	var agg env.AggregateError
	if !errors.As(err, &agg) {
		return fmt.Errorf("invalid configuration: %w", err)
	}
	fields := fieldKeys(t, "")
	out := &Error{}
	for _, e := range agg.Errors {
		var (
			notSet env.VarIsNotSetError
			empty  env.EmptyVarError
			parse  env.ParseError
		)
		switch {
		case errors.As(e, &notSet):
			out.Problems = append(out.Problems, Problem{notSet.Key, "required but not set"})
		case errors.As(e, &empty):
			out.Problems = append(out.Problems, Problem{empty.Key, "must not be empty"})
		case errors.As(e, &parse):
			key := parse.Name
			if k, ok := fields[fieldID{parse.Name, parse.Type}]; ok {
				key = k
			}
			out.Problems = append(out.Problems, Problem{key, unwrapParse(parse.Err)})
		default:
			out.Problems = append(out.Problems, Problem{"?", e.Error()})
		}
	}
	sort.Slice(out.Problems, func(i, j int) bool { return out.Problems[i].Var < out.Problems[j].Var })
	return out
}

// unwrapParse drops strconv's "strconv.ParseInt: parsing "x": " noise while
// keeping the reason.
func unwrapParse(err error) string {
	msg := err.Error()
	if i := strings.LastIndex(msg, ": "); i >= 0 && strings.HasPrefix(msg, "strconv.") {
		return "invalid value: " + msg[i+2:]
	}
	return msg
}

type fieldID struct {
	name string
	typ  reflect.Type
}

// fieldKeys maps each field to the environment variable that sets it, walking
// nested structs the way caarlos0/env does (with their envPrefix). Two fields
// with the same name and type would be ambiguous: they map to neither, and
// the error then names the Go field, which is still findable.
func fieldKeys(t reflect.Type, prefix string) map[fieldID]string {
	keys := map[fieldID]string{}
	ambiguous := map[fieldID]bool{}
	var walk func(reflect.Type, string)
	walk = func(t reflect.Type, prefix string) {
		for t.Kind() == reflect.Pointer {
			t = t.Elem()
		}
		if t.Kind() != reflect.Struct {
			return
		}
		for i := range t.NumField() {
			f := t.Field(i)
			tag := f.Tag.Get("env")
			name, _, _ := strings.Cut(tag, ",")
			if name == "" && isNested(f.Type) {
				walk(f.Type, prefix+f.Tag.Get("envPrefix"))
				continue
			}
			if name == "" {
				continue
			}
			id := fieldID{f.Name, f.Type}
			if _, dup := keys[id]; dup {
				ambiguous[id] = true
			}
			keys[id] = prefix + name
		}
	}
	walk(t, prefix)
	for id := range ambiguous {
		delete(keys, id)
	}
	return keys
}

func isNested(t reflect.Type) bool {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t.Kind() != reflect.Struct {
		return false
	}
	// Structs that parse from text (like time.Time) are values, not nesting.
	_, textual := reflect.PointerTo(t).MethodByName("UnmarshalText")
	return !textual
}

func environ(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}
