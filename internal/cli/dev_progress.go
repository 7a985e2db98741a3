package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"
)

// progress shows `zeitwork dev` starting, one line per stage: on a
// terminal a spinner (schollz/progressbar, with the time the stage has
// taken) turns while the stage runs and gives way to ✓ (or ✗) with what it
// found; elsewhere (a pipe, a log file, a test) each stage is one plain line
// when it ends, so that the output reads the same in CI.
type progress struct {
	w             io.Writer
	tty           bool
	ok, bad, head lipgloss.Style

	mu  sync.Mutex
	bar *progressbar.ProgressBar // the running stage's spinner
}

func newProgress(w io.Writer, vars map[string]string) *progress {
	f, isFile := w.(*os.File)
	p := &progress{w: w, tty: isFile && term.IsTerminal(int(f.Fd())) && vars["TERM"] != "dumb"}
	r := lipgloss.NewRenderer(w)
	if useColor(w, vars) {
		r.SetColorProfile(termenv.ANSI)
	} else {
		r.SetColorProfile(termenv.Ascii)
	}
	p.ok, p.bad, p.head = r.NewStyle().Foreground(lipgloss.Color("2")), r.NewStyle().Foreground(lipgloss.Color("1")), r.NewStyle().Bold(true)
	return p
}

// start begins a stage; done or fail ends it. One stage runs at a time.
func (p *progress) start(stage, doing string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		return
	}
	// A bar of unknown length is a spinner; it turns on its own timer.
	p.bar = progressbar.NewOptions(-1,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionSetDescription(fmt.Sprintf("%-13s %s", stage, doing)),
		progressbar.OptionSpinnerType(14),
		progressbar.OptionSetSpinnerChangeInterval(100*time.Millisecond),
		progressbar.OptionSetRenderBlankState(true),
		progressbar.OptionClearOnFinish(),
	)
}

// done ends the running stage with what it found.
func (p *progress) done(stage, found string) {
	p.end(p.ok.Render("✓"), stage, found)
}

// fail ends the running stage with its error.
func (p *progress) fail(stage string, err error) {
	p.end(p.bad.Render("✗"), stage, err.Error())
}

func (p *progress) end(mark, stage, text string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.bar != nil {
		_ = p.bar.Finish() // clears the spinner's line
		p.bar = nil
	}
	fmt.Fprintf(p.w, "  %s %-13s %s\n", mark, stage, text)
}

// title is a heading: bold where colours are used.
func (p *progress) title(s string) string { return p.head.Render(s) }
