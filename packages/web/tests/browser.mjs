// The dashboard in a real browser (Debian's chromium through playwright-core), against a real
// `zeitwork api` that test/web starts with a database and the GitHub emulator. test/web runs it:
//
//   BASE_URL     the API serving the dashboard under /
//   CONTROL_URL  the Go test's hooks: /approve?login=… (who the emulator signs in), /seed (a project
//                with a deployment and build log lines), /more (more log lines)
//   CHROMIUM     the browser binary; SCREENSHOTS  a directory for the pages' screenshots
//
// It prints one JSON line with what it measured; any failed expectation throws (exit 1).
import { chromium } from 'playwright-core'
import { gzipSync } from 'node:zlib'
import { mkdirSync } from 'node:fs'
import { join } from 'node:path'

const base = process.env.BASE_URL
const control = process.env.CONTROL_URL
const shots = process.env.SCREENSHOTS
if (!base || !control || !shots) throw new Error('BASE_URL, CONTROL_URL and SCREENSHOTS are required')
mkdirSync(shots, { recursive: true })
const timeout = 30_000

async function hook(path) {
  const res = await fetch(control + path)
  const body = await res.text()
  if (!res.ok) throw new Error(`control ${path}: ${res.status} ${body}`)
  return body ? JSON.parse(body) : null
}

function expect(cond, what) {
  if (!cond) throw new Error(`expected ${what}`)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage'],
})
const result = {}
try {
  const origin = new URL(base).origin
  // Every request a page makes goes to the API's origin or, while signing in, the emulator:
  // no fonts, icons or scripts from anywhere else. Images may: avatars are GitHub's.
  const foreign = []
  async function newPage() {
    const context = await browser.newContext({ viewport: { width: 1200, height: 800 } })
    context.setDefaultTimeout(timeout)
    const page = await context.newPage()
    page.on('request', (r) => {
      const u = new URL(r.url())
      if (u.origin !== origin && u.hostname !== '127.0.0.1' && u.protocol !== 'data:' && r.resourceType() !== 'image') foreign.push(r.url())
    })
    const errors = []
    page.on('pageerror', e => errors.push(String(e)))
    return { context, page, errors }
  }

  // 1. Anonymous: / sends to the sign-in page; the first user to sign in is the admin.
  await hook('/approve?login=alice')
  const a = await newPage()
  const scripts = new Map()
  a.page.on('response', async (res) => {
    if (res.request().resourceType() === 'script' && res.ok()) scripts.set(res.url(), res.body())
  })
  await a.page.goto(base + '/')
  await a.page.waitForURL('**/signin')
  // First-load JavaScript: every script the sign-in page loaded, gzipped (-9) one by one.
  await a.page.waitForLoadState('networkidle')
  let gz = 0, raw = 0
  for (const body of await Promise.all(scripts.values())) {
    raw += body.length
    gz += gzipSync(body, { level: 9 }).length
  }
  result.firstLoadScripts = scripts.size
  result.firstLoadJSBytes = raw
  result.firstLoadJSGzipBytes = gz
  await a.page.getByRole('heading', { name: 'Sign in to Zeitwork' }).waitFor()
  await a.page.screenshot({ path: join(shots, 'signin.png') })
  await a.page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await a.page.getByRole('heading', { name: 'Projects' }).waitFor()
  await a.page.getByTestId('empty').waitFor()
  expect(await a.page.getByTestId('username').textContent() === 'alice', 'alice to be signed in')

  // 2. A project with a deployment and its build log: the list shows its latest state.
  const seed = await hook('/seed')
  await a.page.reload()
  await a.page.getByTestId('projects').getByText('web-app').waitFor()
  await a.page.getByTestId('projects').getByTestId('status').filter({ hasText: 'queued' }).waitFor()
  await a.page.screenshot({ path: join(shots, 'projects.png') })
  await a.page.getByRole('link', { name: /web-app/ }).click()
  await a.page.waitForURL(`**/projects/${seed.project}`)
  await a.page.getByTestId('project-name').filter({ hasText: 'web-app' }).waitFor()
  await a.page.getByTestId('deployments').getByRole('link').first().click()
  await a.page.waitForURL(`**/deployments/${seed.deployment}`)

  await a.page.getByTestId('no-instances').waitFor()
  // 3. The build log: the lines so far, ANSI colours rendered, then live ones as they come.
  const log = a.page.getByTestId('log')
  await log.getByText('step 1/2: installing').waitFor()
  const red = log.locator('span.text-red-400', { hasText: 'error text in red' })
  await red.waitFor()
  expect(!(await log.textContent()).includes('\u001b['), 'no raw escape codes in the log')
  await a.page.getByTestId('log-state').filter({ hasText: 'live' }).waitFor()
  await hook('/more')
  await log.getByText('step 2/2: live line').waitFor()
  await a.page.screenshot({ path: join(shots, 'deployment.png') })
  // Scrolled up, the log stays where the user put it while lines arrive.
  await hook('/more?n=60')
  await log.getByText('filler 60').waitFor()
  await log.evaluate(el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')) })
  await a.page.getByTestId('log-state').filter({ hasText: 'paused' }).waitFor()
  await hook('/more?n=5&prefix=later')
  await log.getByText('later 5').waitFor()
  expect(await log.evaluate(el => el.scrollTop) === 0, 'the log not to scroll while the user reads above')
  expect(a.errors.length === 0, `no page errors, got ${a.errors.join('; ')}`)

  // 4. Someone else: waits for admission, and once admitted cannot see alice's project.
  await hook('/approve?login=bob')
  const b = await newPage()
  await b.page.goto(base + '/signin')
  await b.page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await b.page.getByTestId('waitlist').waitFor()
  await b.page.screenshot({ path: join(shots, 'waitlist.png') })
  // alice, the admin, admits bob from her waitlist page; bob's page lets him in by itself.
  await a.page.getByRole('link', { name: 'Waitlist' }).click()
  await a.page.getByTestId('waiting').getByText('bob', { exact: true }).waitFor()
  await a.page.screenshot({ path: join(shots, 'admin-waitlist.png') })
  await a.page.getByRole('button', { name: 'Admit bob' }).click()
  await a.page.getByTestId('empty').waitFor()
  await b.page.getByRole('heading', { name: 'Projects' }).waitFor()
  await b.page.goto(base + `/projects/${seed.project}`)
  const err = b.page.getByTestId('error')
  await err.waitFor()
  expect((await err.textContent()).includes('no such project'), 'the stranger to get "no such project"')
  expect(!(await b.page.content()).includes('web-app'), 'nothing of alice\'s project on the stranger\'s page')
  await b.page.goto(base + '/')
  await b.page.getByTestId('empty').waitFor()

  expect(foreign.length === 0, `no requests off the origin, got ${foreign.join(', ')}`)
}
finally {
  await browser.close()
}
console.log(JSON.stringify(result))
