package detect

import (
	"bytes"
	"embed"
	"encoding/json"
	"fmt"
	"strings"
	"text/template"
)

// The Dockerfiles are text/template files so that they read as Dockerfiles;
// everything a source tree contributes to them has been reduced to versions,
// known commands and checked paths before it gets here.
//
//go:embed templates/*.tmpl
var templateFS embed.FS

var templates = template.Must(template.New("").Funcs(template.FuncMap{
	"exec": execForm,
	"join": strings.Join,
}).ParseFS(templateFS, "templates/*.tmpl"))

// render executes the template for one kind.
func render(name string, data any) ([]byte, error) {
	var b bytes.Buffer
	if err := templates.ExecuteTemplate(&b, name, data); err != nil {
		return nil, fmt.Errorf("render %s Dockerfile: %w", name, err)
	}
	return b.Bytes(), nil
}

// execForm renders a command as the JSON array of CMD's exec form, which
// keeps any argument on one line and needs no shell quoting.
func execForm(args []string) (string, error) {
	quoted := make([]string, len(args))
	for i, a := range args {
		var b bytes.Buffer
		enc := json.NewEncoder(&b)
		enc.SetEscapeHTML(false)
		if err := enc.Encode(a); err != nil {
			return "", err
		}
		quoted[i] = strings.TrimSuffix(b.String(), "\n")
	}
	return "[" + strings.Join(quoted, ", ") + "]", nil
}

//go:embed dockerignore
var dockerIgnoreFS embed.FS

// dockerIgnore returns the default .dockerignore for a generated build.
func dockerIgnore(k Kind) []byte {
	name := "node"
	switch k {
	case KindRails, KindLaravel, KindGo, KindStatic:
		name = string(k)
	}
	b, err := dockerIgnoreFS.ReadFile("dockerignore/" + name)
	if err != nil {
		panic(err) // embedded at build time; a missing file is a bug
	}
	return b
}
