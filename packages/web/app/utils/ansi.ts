// ansi splits a log line into spans styled by its SGR escape codes (colours, bold), dropping
// every other escape sequence: build tools colour their output, and a log should look the same.
export interface Span { text: string, cls: string }

const colours = ['black', 'red', 'green', 'yellow', 'blue', 'magenta', 'cyan', 'white']
const fg: Record<string, string> = {
  black: 'text-zinc-400', red: 'text-red-400', green: 'text-green-400', yellow: 'text-yellow-300',
  blue: 'text-blue-400', magenta: 'text-fuchsia-400', cyan: 'text-cyan-300', white: 'text-zinc-100',
}

// eslint-disable-next-line no-control-regex
const escape = /\x1b\[([0-9;]*)([A-Za-z])/g

export function ansi(line: string): Span[] {
  const spans: Span[] = []
  let colour = ''
  let bold = false
  let last = 0
  const push = (text: string) => {
    if (text) spans.push({ text, cls: [colour && fg[colour], bold && 'font-bold'].filter(Boolean).join(' ') })
  }
  for (const m of line.matchAll(escape)) {
    push(line.slice(last, m.index))
    last = m.index! + m[0].length
    if (m[2] !== 'm') continue
    for (const code of (m[1] || '0').split(';').map(Number)) {
      if (code === 0) { colour = ''; bold = false }
      else if (code === 1) bold = true
      else if (code === 22) bold = false
      else if (code === 39) colour = ''
      else if (code >= 30 && code <= 37) colour = colours[code - 30]!
      else if (code >= 90 && code <= 97) colour = colours[code - 90]!
    }
  }
  push(line.slice(last))
  return spans
}
