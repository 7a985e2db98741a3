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
	return ParseFrom[T](Environ(os.Environ()))
}

// ParseFrom reads the given environment into a new T; tests use it so they
// never depend on the machine's variables.
func ParseFrom[T any](environment map[string]string) (T, error) {
	var cfg T
	if o, ok := any(&cfg).(optional); ok {
		o.enable(environment)
	}
	out := &Error{}
	if err := env.ParseWithOptions(&cfg, env.Options{Environment: environment}); err != nil {
		if err := describe(err, reflect.TypeOf(cfg)); !errors.As(err, &out) {
			return cfg, err
		}
	}
	// Rules across variables, checked even when some failed to parse so
	// that one run names every problem; a variable already named for
	// failing to parse is not named again.
	named := map[string]bool{}
	for _, p := range out.Problems {
		named[p.Var] = true
	}
	for _, p := range validate(reflect.ValueOf(cfg)) {
		if !named[p.Var] {
			named[p.Var] = true
			out.Problems = append(out.Problems, p)
		}
	}
	if len(out.Problems) == 0 {
		return cfg, nil
	}
	sort.Slice(out.Problems, func(i, j int) bool { return out.Problems[i].Var < out.Problems[j].Var })
	return cfg, out
}

// optional is a role with concerns parsed only when a variable turns them
// on: enable allocates their pointers, and caarlos0/env parses (and
// requires the variables of) a non-nil pointer's struct only.
type optional interface {
	enable(environment map[string]string)
}

// validator is a configuration struct with rules that one variable's tag
// cannot say (a URL's scheme, two variables that go together). ParseFrom
// asks every struct it parsed, nested ones included.
type validator interface {
	validate() []Problem
}

func validate(v reflect.Value) []Problem {
	for v.Kind() == reflect.Pointer && !v.IsNil() {
		v = v.Elem()
	}
	if v.Kind() != reflect.Struct {
		return nil
	}
	var ps []Problem
	if val, ok := v.Interface().(validator); ok {
		ps = append(ps, val.validate()...)
	}
	for i := range v.NumField() {
		if f := v.Type().Field(i); f.IsExported() && isNested(f.Type) {
			ps = append(ps, validate(v.Field(i))...)
		}
	}
	return ps
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

// Environ turns KEY=value pairs (os.Environ's form) into a map.
func Environ(kv []string) map[string]string {
	m := make(map[string]string, len(kv))
	for _, e := range kv {
		if k, v, ok := strings.Cut(e, "="); ok {
			m[k] = v
		}
	}
	return m
}
