package cli

import (
	"fmt"
	"io"
	"os"
	"sync"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/muesli/termenv"
	"golang.org/x/term"
)

// progress shows `zeitwork dev` starting, one line per stage: on a
// terminal a spinner turns while the stage runs and becomes ✓ (or ✗) with
// what it found; elsewhere (a pipe, a log file, a test) each stage is one
// plain line when it ends, so that the output reads the same in CI.
type progress struct {
	w             io.Writer
	tty           bool
	ok, bad, head lipgloss.Style

	mu   sync.Mutex
	stop chan struct{} // closed to stop the running stage's spinner
	spun chan struct{} // closed when the spinner has stopped
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

var spinnerFrames = []string{"⠋", "⠙", "⠹", "⠸", "⠼", "⠴", "⠦", "⠧", "⠇", "⠏"}

// start begins a stage; done or fail ends it. One stage runs at a time.
func (p *progress) start(stage, doing string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.tty {
		return
	}
	line := fmt.Sprintf("%-13s %s", stage, doing)
	p.stop, p.spun = make(chan struct{}), make(chan struct{})
	stop, spun := p.stop, p.spun
	fmt.Fprintf(p.w, "  %s %s", spinnerFrames[0], line)
	go func() {
		defer close(spun)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for i := 1; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			p.mu.Lock()
			fmt.Fprintf(p.w, "\r\033[K  %s %s", spinnerFrames[i%len(spinnerFrames)], line)
			p.mu.Unlock()
		}
	}()
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
	stop, spun := p.stop, p.spun
	p.stop, p.spun = nil, nil
	p.mu.Unlock()
	if stop != nil {
		close(stop)
		<-spun
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.tty {
		fmt.Fprint(p.w, "\r\033[K")
	}
	fmt.Fprintf(p.w, "  %s %-13s %s\n", mark, stage, text)
}

// title is a heading: bold where colours are used.
func (p *progress) title(s string) string { return p.head.Render(s) }
