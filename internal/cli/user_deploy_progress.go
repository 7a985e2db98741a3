package cli

import (
	"fmt"
	"io"
	"os"
	"regexp"
	"strings"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"github.com/zeitwork/zeitwork/internal/client"
)

// deployProgress is what `zeitwork deploy` draws on a terminal while it
// waits: a bar of the build's steps done out of those BuildKit announced,
// then one of the instances healthy out of the replicas. The build log
// itself is kept back (the last lines are shown if the build fails) so
// that the bar stays in one place. Off a terminal there is none, and the
// log lines print as they come: that reads well in CI and in a file.
type deployProgress struct {
	w      io.Writer
	colour bool
	bar    *progressbar.ProgressBar
	steps  buildSteps
	// tail is the build's last lines, for the failure that needs them.
	tail []string
	// healthy is the last count shown, so that a poll that finds the same
	// redraws nothing.
	healthy int
}

// tailLines is how many build lines a failure shows.
const tailLines = 20

// newDeployProgress returns the display for w, or nil when w is not a
// terminal (or TERM=dumb, or --json).
func (u *user) newDeployProgress() *deployProgress {
	f, ok := u.env.Stderr.(*os.File)
	if u.json || !ok || !term.IsTerminal(int(f.Fd())) || u.vars()["TERM"] == "dumb" {
		return nil
	}
	return &deployProgress{w: f, colour: useColor(f, u.vars()), healthy: -1}
}

func (p *deployProgress) newBar(max int, what string) *progressbar.ProgressBar {
	theme := progressbar.Theme{Saucer: "█", SaucerPadding: "░", BarStart: "", BarEnd: ""}
	if p.colour {
		theme.Saucer = "[green]█[reset]"
	}
	return progressbar.NewOptions(max,
		progressbar.OptionSetWriter(p.w),
		progressbar.OptionEnableColorCodes(p.colour),
		progressbar.OptionSetTheme(theme),
		progressbar.OptionSetWidth(30),
		progressbar.OptionShowCount(),
		progressbar.OptionSetPredictTime(false),
		progressbar.OptionSetElapsedTime(true),
		progressbar.OptionSetDescription(fmt.Sprintf("%-17s", what)),
		progressbar.OptionOnCompletion(func() { fmt.Fprintln(p.w) }),
	)
}

// line takes one log line of the build.
func (p *deployProgress) line(l client.LogLine) {
	if l.InstanceId != nil {
		return
	}
	if p.tail = append(p.tail, l.Text); len(p.tail) > tailLines {
		p.tail = p.tail[1:]
	}
	if !p.steps.add(l.Text) {
		return
	}
	done, total := p.steps.count()
	if p.bar == nil {
		p.bar = p.newBar(total, "build steps")
	} else {
		p.bar.ChangeMax(total)
	}
	// A bar at its maximum is finished for good, and more steps may still
	// be announced: the last one counts once the build has ended.
	_ = p.bar.Set(min(done, total-1))
}

// buildEnded finishes the build's bar; when the build failed, it shows
// the last lines of its log.
func (p *deployProgress) buildEnded(failed bool) {
	if p.bar != nil {
		if failed {
			_ = p.bar.Exit()
		} else {
			_ = p.bar.Finish()
		}
		p.bar = nil
	}
	if failed && len(p.tail) > 0 {
		fmt.Fprintln(p.w, "The end of the build log:")
		for _, l := range p.tail {
			fmt.Fprintf(p.w, "  %s\n", l)
		}
	}
}

// instances shows healthy of replicas.
func (p *deployProgress) instances(healthy, replicas int) {
	if replicas <= 0 || healthy == p.healthy {
		return
	}
	p.healthy = healthy
	if p.bar == nil {
		p.bar = p.newBar(replicas, "instances healthy")
	}
	_ = p.bar.Set(min(healthy, replicas))
}

// end leaves the terminal on a fresh line: the bar finished when the
// deployment serves, else stays where it got to.
func (p *deployProgress) end(serving bool) {
	if p.bar == nil {
		return
	}
	if serving {
		_ = p.bar.Finish()
	} else {
		_ = p.bar.Exit()
	}
	p.bar = nil
}

// buildSteps counts a build's steps from BuildKit's plain progress, as
// the builder writes it into the build log:
//
//	#7 [build 2/5] RUN npm ci
//	#7 DONE 12.3s        (or CACHED)
//
// A step is a vertex whose name carries [stage n/m]; the total is the sum
// of each stage's m. BuildKit's own vertices ([internal] load …) are not
// steps.
type buildSteps struct {
	stages map[string]int  // stage → its step count
	vertex map[string]bool // vertex id → done, for the steps
}

var (
	stepHeader = regexp.MustCompile(`^#(\d+) \[(?:(\S+) )?(\d+)/(\d+)\] `)
	stepDone   = regexp.MustCompile(`^#(\d+) (?:DONE|CACHED)\b`)
)

// add reads one line and says whether the count changed.
func (s *buildSteps) add(line string) bool {
	if s.stages == nil {
		s.stages, s.vertex = map[string]int{}, map[string]bool{}
	}
	line = strings.TrimSpace(line)
	if m := stepHeader.FindStringSubmatch(line); m != nil {
		var total int
		_, _ = fmt.Sscan(m[4], &total) // digits: the pattern says so
		changed := false
		if s.stages[m[2]] != total {
			s.stages[m[2]], changed = total, true
		}
		if _, ok := s.vertex[m[1]]; !ok {
			s.vertex[m[1]] = false
			changed = true
		}
		return changed
	}
	if m := stepDone.FindStringSubmatch(line); m != nil {
		if done, ok := s.vertex[m[1]]; ok && !done {
			s.vertex[m[1]] = true
			return true
		}
	}
	return false
}

// count is the steps done and the steps announced.
func (s *buildSteps) count() (done, total int) {
	for _, n := range s.stages {
		total += n
	}
	for _, d := range s.vertex {
		if d {
			done++
		}
	}
	return done, max(total, done)
}
