package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"runtime"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/lipgloss/table"
	"github.com/muesli/termenv"
	"golang.org/x/term"
)

// useColor says whether to colour output written to w: only a terminal
// gets colours, and NO_COLOR (https://no-color.org) or TERM=dumb turns
// them off even there.
func useColor(w io.Writer, vars map[string]string) bool {
	if vars["NO_COLOR"] != "" || vars["TERM"] == "dumb" {
		return false
	}
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// renderer styles text for stdout, without colours where useColor says so.
func (u *user) renderer() *lipgloss.Renderer {
	r := lipgloss.NewRenderer(u.env.Stdout)
	// The 16 basic colours (all this uses) work on every terminal, and
	// deciding here rather than from the process's TERM keeps the choice
	// to useColor alone.
	if useColor(u.env.Stdout, u.vars()) {
		r.SetColorProfile(termenv.ANSI)
	} else {
		r.SetColorProfile(termenv.Ascii)
	}
	return r
}

// printJSON writes v as indented JSON: what --json prints.
func (u *user) printJSON(v any) error {
	enc := json.NewEncoder(u.env.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}

// printf is a line for a person; --json prints the result instead.
func (u *user) printf(format string, args ...any) {
	if !u.json {
		fmt.Fprintf(u.env.Stdout, format, args...)
	}
}

// table prints rows under headers in aligned columns, the headers bold
// on a terminal; none prints empty instead.
func (u *user) table(empty string, headers []string, rows [][]string) {
	if len(rows) == 0 {
		fmt.Fprintln(u.env.Stdout, empty)
		return
	}
	r := u.renderer()
	head, cell := r.NewStyle().Bold(true).PaddingRight(3), r.NewStyle().PaddingRight(3)
	t := table.New().Headers(headers...).Rows(rows...).
		Border(lipgloss.HiddenBorder()).BorderTop(false).BorderBottom(false).BorderLeft(false).
		BorderRight(false).BorderColumn(false).BorderHeader(false).
		StyleFunc(func(row, _ int) lipgloss.Style {
			if row == table.HeaderRow {
				return head
			}
			return cell
		})
	fmt.Fprintln(u.env.Stdout, t.Render())
}

// status colours a state: green when it is good, red when it failed.
func (u *user) status(s string) string {
	r := u.renderer()
	switch s {
	case "active", "verified":
		return r.NewStyle().Foreground(lipgloss.Color("2")).Render(s)
	case "failed":
		return r.NewStyle().Foreground(lipgloss.Color("1")).Render(s)
	}
	return s
}

func ago(t time.Time) string {
	if t.IsZero() {
		return ""
	}
	d := time.Since(t).Round(time.Second)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", int(d.Seconds()))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	}
	return t.Local().Format("2006-01-02")
}

// openBrowser opens url in a browser when there is a screen to show it
// on; it says whether it tried. Over SSH or in CI there is none, and the
// printed URL is the way.
func (u *user) openBrowser(url string) bool {
	v := u.vars()
	var cmd *exec.Cmd
	switch runtime.GOOS {
	case "darwin":
		if v["SSH_CONNECTION"] != "" {
			return false
		}
		cmd = exec.Command("open", url)
	default:
		if v["DISPLAY"] == "" && v["WAYLAND_DISPLAY"] == "" {
			return false
		}
		cmd = exec.Command("xdg-open", url)
	}
	if cmd.Start() != nil {
		return false
	}
	go cmd.Wait() //nolint:errcheck // the browser's exit says nothing about the sign-in
	return true
}
