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
import { mkdirSync, readFileSync } from 'node:fs'
import { createRequire } from 'node:module'
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

// axe-core, evaluated in a page on demand (through the DevTools protocol, so no CSP or page code
// is involved): every rule that applies, violations counted by impact.
const axeSource = readFileSync(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8')
const axeResults = {}
async function axe(page, name) {
  if (await page.evaluate(() => typeof window.axe) !== 'object') await page.evaluate(axeSource)
  // Scan a settled page: a dialog fading out (its text half transparent) reads to axe-core as too
  // little contrast. Wait until no dialog is left and every finite animation has ended (spinners
  // turn for ever and are not waited for).
  await page.waitForFunction(() => !document.querySelector('[role="dialog"], [role="alertdialog"]') &&
    document.getAnimations().every(an => an.playState !== 'running' || an.effect?.getTiming().iterations === Infinity),
  null, { timeout: 10000 })
  // Excluded: the focus guards of the toast region (reka-ui's ToastViewport), aria-hidden spans
  // that only hand focus on to the toasts; axe-core's aria-hidden-focus reports them.
  const r = await page.evaluate(() => window.axe.run({ exclude: [['[role="region"] > span[aria-hidden="true"]']] }, { resultTypes: ['violations'] }))
  const serious = r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
  axeResults[name] = {
    violations: r.violations.length,
    seriousOrCritical: serious.map(v => `${v.id} (${v.impact}): ${v.nodes.slice(0, 3).map(n => n.target.join(' ')).join('; ')}`),
    minorOrModerate: r.violations.filter(v => !serious.includes(v)).map(v => `${v.id} (${v.impact})`),
  }
}

// Cumulative layout shift since the page's load (the layout-shift entries without recent input),
// recorded by an init script in every page.
function observeLayoutShift() {
  window.__cls = 0
  window.__clsSources = []
  new PerformanceObserver((list) => {
    for (const e of list.getEntries()) {
      if (e.hadRecentInput) continue
      window.__cls += e.value
      for (const src of e.sources ?? []) {
        const n = src.node
        window.__clsSources.push(`${e.value.toFixed(4)} ${n?.nodeName ?? '?'}${n?.dataset?.testid ? `[${n.dataset.testid}]` : ''}.${String(n?.className ?? '').slice(0, 60)}`)
      }
    }
  }).observe({ type: 'layout-shift', buffered: true })
}
const cls = {}

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
    await context.addInitScript(observeLayoutShift)
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
  const onScript = (res) => {
    if (res.request().resourceType() === 'script' && res.ok()) scripts.set(res.url(), res.body())
  }
  a.page.on('response', onScript)
  await a.page.goto(base + '/')
  await a.page.waitForURL('**/signin')
  // First-load JavaScript: every script the sign-in page loaded, gzipped (-9) one by one.
  await a.page.waitForLoadState('networkidle')
  a.page.off('response', onScript) // the first load only
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
  await axe(a.page, 'signin')
  await a.page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await a.page.getByRole('heading', { name: 'Projects' }).waitFor()
  await a.page.getByTestId('empty').waitFor()
  expect(await a.page.getByTestId('username').textContent() === 'alice', 'alice to be signed in')

  // 2. A project with a deployment and its build log: the list shows its latest state.
  const seed = await hook('/seed')
  await a.page.reload()
  await a.page.getByTestId('projects').getByText('web-app').waitFor()
  await a.page.getByTestId('projects').getByTestId('status').filter({ hasText: 'queued' }).waitFor()
  await a.page.waitForLoadState('networkidle')
  cls.projects = await a.page.evaluate(() => window.__cls) // the first load of the projects page
  await a.page.screenshot({ path: join(shots, 'projects.png') })
  await axe(a.page, 'projects')
  await a.page.getByRole('link', { name: /web-app/ }).click()
  await a.page.waitForURL(`**/projects/${seed.project}`)
  await a.page.getByTestId('project-name').filter({ hasText: 'web-app' }).waitFor()
  await a.page.getByTestId('deployments').getByRole('link').first().click()
  await a.page.waitForURL(`**/deployments/${seed.deployment}`)
  // The deployment page's first load: its details, log and (no) instances in place.
  await a.page.reload()
  await a.page.getByTestId('no-instances').waitFor()
  await a.page.getByTestId('log').getByText('step 1/2: installing').waitFor()
  await a.page.waitForLoadState('networkidle')
  cls.deployment = await a.page.evaluate(() => window.__cls)
  if (cls.deployment > 0) result.clsDeploymentSources = await a.page.evaluate(() => window.__clsSources)

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
  await a.page.screenshot({ path: join(shots, 'build-log.png') })
  // Scrolled up, the log stays where the user put it while lines arrive.
  await hook('/more?n=60')
  await log.getByText('filler 60').waitFor()
  await log.evaluate(el => { el.scrollTop = 0; el.dispatchEvent(new Event('scroll')) })
  await a.page.getByTestId('log-state').filter({ hasText: 'paused' }).waitFor()
  await hook('/more?n=5&prefix=later')
  await log.getByText('later 5').waitFor()
  expect(await log.evaluate(el => el.scrollTop) === 0, 'the log not to scroll while the user reads above')
  // Cancelling the build: the deployment fails with the reason, the log ends.
  await a.page.getByRole('button', { name: 'Cancel build' }).click()
  await a.page.getByTestId('deployment-status').filter({ hasText: 'failed' }).waitFor()
  await a.page.getByText('cancelled', { exact: true }).waitFor()
  await a.page.getByTestId('log-state').filter({ hasText: 'build finished' }).waitFor()
  expect(await a.page.getByRole('button', { name: 'Cancel build' }).count() === 0, 'no Cancel once it failed')
  expect(a.errors.length === 0, `no page errors, got ${a.errors.join('; ')}`)

  // 4. A project from a repository. No installation is linked yet, so the page offers to install
  // the App; GitHub's install page (the emulator) sends alice back with it linked to her
  // organisation, and she imports alice/shop: its first build starts at once.
  await a.page.goto(base + '/')
  await a.page.getByRole('link', { name: 'New project' }).click()
  await a.page.getByTestId('no-installation').waitFor()
  await a.page.getByRole('link', { name: 'Install the GitHub App' }).click()
  await a.page.waitForURL('**/projects/new')
  await a.page.getByRole('radio', { name: 'alice/shop' }).check()
  // The branch picker lists the repository's branches (read through the installation), the
  // default one chosen.
  const picker = a.page.getByTestId('branch-picker')
  await picker.filter({ hasText: 'main' }).waitFor()
  await picker.click()
  const options = a.page.getByRole('option')
  await options.filter({ hasText: 'staging' }).waitFor()
  const branchNames = (await options.allTextContents()).map(t => t.trim())
  expect(branchNames.join(' ') === 'main staging', `the branches main and staging listed, got ${branchNames.join(', ')}`)
  await a.page.keyboard.press('Escape')
  await options.first().waitFor({ state: 'detached' })
  expect((await picker.textContent()).includes('main'), 'the repository\'s default branch to be chosen')
  expect(await a.page.getByLabel('Project name').inputValue() === 'shop', 'the project named after the repository')
  await a.page.screenshot({ path: join(shots, 'new-project.png') })
  await axe(a.page, 'new-project')
  await a.page.getByRole('button', { name: 'Create and deploy' }).click()
  await a.page.waitForURL(/\/projects\/[0-9a-f-]{36}$/)
  const shop = new URL(a.page.url()).pathname.split('/').pop()
  await a.page.getByTestId('project-name').filter({ hasText: 'shop' }).waitFor()
  const firstLink = a.page.getByTestId('deployments').getByRole('link', { name: 'first page' })
  await firstLink.waitFor()
  await firstLink.click()
  await a.page.waitForURL(/\/deployments\/[0-9a-f-]{36}$/)
  const first = new URL(a.page.url()).pathname.split('/').pop()

  // 5. Its build log streams, and the page follows the deployment's state without a reload
  // until it is live at the project's host.
  await a.page.getByTestId('log-state').filter({ hasText: 'live' }).waitFor()
  await hook(`/state?deployment=${first}&status=building`)
  await hook(`/more?deployment=${first}&n=3&prefix=shop build`)
  await a.page.getByTestId('log').getByText('shop build 3').waitFor()
  await a.page.getByTestId('deployment-status').filter({ hasText: 'building' }).waitFor()
  await a.page.getByTestId('runtime-log').waitFor()
  await hook(`/state?deployment=${first}&status=active`)
  await a.page.getByTestId('deployment-status').filter({ hasText: 'active' }).waitFor()
  const liveURL = await a.page.getByTestId('deployment-url').textContent()
  expect(liveURL.includes('shop.apps.zeitwork.test'), `the live deployment at the project's host, got ${liveURL}`)
  await a.page.screenshot({ path: join(shots, 'deployment.png') })
  await axe(a.page, 'deployment')
  await a.page.getByRole('link', { name: '← Project' }).click()
  await a.page.getByTestId('production-url').filter({ hasText: 'shop.apps.zeitwork.test' }).waitFor()

  // 6. Settings: how it runs, saved; a variable: saved, hidden until revealed, encrypted in the database.
  await a.page.getByRole('link', { name: 'Settings' }).click()
  await a.page.getByTestId('no-variables').waitFor()
  await a.page.getByTestId('no-domains').waitFor()
  const general = a.page.getByRole('form', { name: 'Build and run settings' })
  expect(await general.getByLabel('Port').inputValue() === '8080', 'the project\'s port shown')
  await general.getByLabel('Port').fill('3000')
  await general.getByRole('button', { name: 'Save' }).click()
  await a.page.getByText('The next deployment builds and runs with these settings.').first().waitFor()
  await a.page.reload()
  await a.page.getByTestId('no-variables').waitFor()
  expect(await general.getByLabel('Port').inputValue() === '3000', 'the new port kept')
  const secretValue = 'postgres://shop:s3cret@db/shop'
  await a.page.getByLabel('Name', { exact: true }).fill('DATABASE_URL')
  await a.page.getByLabel('Value', { exact: true }).fill(secretValue)
  await a.page.getByRole('form', { name: 'Set a variable' }).getByRole('button', { name: 'Save' }).click()
  const value = a.page.getByTestId('value-DATABASE_URL')
  await value.waitFor()
  expect(!(await a.page.content()).includes('s3cret'), 'the value hidden until revealed')
  await a.page.getByRole('button', { name: 'Reveal DATABASE_URL' }).click()
  await value.getByText(secretValue).waitFor()
  expect(await hook(`/plaintext?value=${encodeURIComponent(secretValue)}`) === 0, 'the value not stored in the clear')
  await a.page.getByRole('button', { name: 'Hide DATABASE_URL' }).click()
  await value.getByText(secretValue).waitFor({ state: 'detached' })

  // 7. A domain: the exact record to create; pending until DNS has it, then verified.
  await a.page.getByLabel('Domain', { exact: true }).fill('shop.example.com')
  await a.page.getByRole('button', { name: 'Add', exact: true }).click()
  const domain = a.page.getByTestId('domain-shop.example.com')
  await domain.getByTestId('domain-status').filter({ hasText: 'pending' }).waitFor()
  const record = domain.getByTestId('dns-records').getByRole('row').filter({ hasText: 'CNAME' })
  await record.getByText('edge.zeitwork.test', { exact: true }).waitFor()
  await record.getByText('shop.example.com', { exact: true }).waitFor()
  await a.page.screenshot({ path: join(shots, 'settings.png'), fullPage: true })
  await domain.getByRole('button', { name: 'Check now shop.example.com' }).click()
  await domain.getByText(/expected/).waitFor()
  expect((await domain.getByTestId('domain-status').textContent()).trim() === 'pending', 'the domain pending before DNS has its record')
  // DNS gets the record and the domains worker checks it: the open page shows it verified by itself.
  await hook('/dns?name=shop.example.com')
  await domain.getByTestId('domain-status').filter({ hasText: 'verified' }).waitFor()
  expect(await domain.getByTestId('domain-rechecks').count() === 0, 'no recheck warning while rechecks pass')
  // The record goes away: a failed recheck is a warning on a domain still served, and once
  // rechecking gives up the domain is failed, not served, and says so.
  let rc = await hook('/dns-gone?name=shop.example.com')
  expect(rc.status === 'verified' && rc.failed_rechecks === 1, `one failed recheck, got ${JSON.stringify(rc)}`)
  await a.page.reload()
  await domain.getByTestId('domain-rechecks').filter({ hasText: 'last recheck failed' }).waitFor()
  for (let i = 0; i < 10 && rc.status === 'verified'; i++) rc = await hook('/dns-gone?name=shop.example.com')
  await a.page.reload()
  await domain.getByTestId('domain-status').filter({ hasText: 'failed' }).waitFor()
  await domain.getByTestId('domain-failed').filter({ hasText: `after ${rc.failed_rechecks} failed rechecks` }).waitFor()
  await a.page.screenshot({ path: join(shots, 'domain-failed.png'), fullPage: true })
  await axe(a.page, 'settings')
  // The record back and checked again: verified, the warnings gone.
  await hook('/dns?name=shop.example.com')
  await a.page.reload()
  await domain.getByTestId('domain-status').filter({ hasText: 'verified' }).waitFor()
  expect(await domain.getByTestId('domain-failed').count() === 0 && await domain.getByTestId('domain-rechecks').count() === 0, 'no warning once verified again')

  // 8. Roll back: a second commit goes live, and the first, now retiring, is one click and a
  // confirmation away; cancelling asks nothing of the operator.
  await hook('/push')
  const second = (await hook(`/deploy?project=${shop}`)).deployment
  await hook(`/state?deployment=${second}&status=active`)
  await a.page.goto(base + `/projects/${shop}`)
  const row = a.page.getByTestId(`deployment-${first}`)
  await row.getByTestId('status').filter({ hasText: 'retiring' }).waitFor()
  await a.page.getByTestId(`deployment-${second}`).getByText('live', { exact: true }).waitFor()
  // Made through POST /v1/deployments with a commit_sha alone, it shows the commit's message and
  // branch, read from GitHub through the installation.
  await a.page.getByTestId(`deployment-${second}`).getByText('second page').waitFor()
  await a.page.getByTestId(`deployment-${second}`).getByText(/ · main\b/).waitFor()
  expect(await a.page.getByTestId(`deployment-${second}`).getByRole('button', { name: /Roll back/ }).count() === 0, 'no rollback to the live deployment')
  // By keyboard: Enter on the focused button opens the confirmation, Escape closes it.
  await row.getByRole('button', { name: /Roll back to/ }).focus()
  await a.page.keyboard.press('Enter')
  await a.page.getByRole('dialog').getByText('first page').waitFor()
  await a.page.keyboard.press('Escape')
  await a.page.getByRole('dialog').waitFor({ state: 'detached' })
  await row.getByRole('button', { name: /Roll back to/ }).click()
  await a.page.getByRole('dialog').getByRole('button', { name: 'Cancel' }).click()
  await a.page.getByRole('dialog').waitFor({ state: 'detached' })
  expect(await hook(`/rollbacks?deployment=${first}`) === 0, 'no rollback asked before the confirmation')
  await row.getByRole('button', { name: /Roll back to/ }).click()
  await a.page.getByRole('dialog').getByText('first page').waitFor()
  await a.page.screenshot({ path: join(shots, 'rollback.png') })
  await a.page.getByTestId('confirm-rollback').click()
  await a.page.getByText('Rolling back').first().waitFor()
  await a.page.getByRole('dialog').waitFor({ state: 'detached' })
  expect(await hook(`/rollbacks?deployment=${first}`) === 1, 'the rollback asked of the operator')
  // A push to another branch: a preview, grouped under its branch, never rolled back to.
  await hook(`/preview?project=${shop}`)
  const group = a.page.getByTestId('preview-group').filter({ hasText: 'feature' })
  // (no reload: the page polls while a deployment is retiring)
  await group.getByRole('link', { name: 'try the feature' }).waitFor()
  await group.getByText('by alice').waitFor()
  expect(await group.getByRole('button', { name: /Roll back/ }).count() === 0, 'no rollback to a preview')
  expect(await a.page.getByTestId('deployments').getByText('try the feature').count() === 0, 'the preview not among production deployments')
  await a.page.screenshot({ path: join(shots, 'project.png') })
  await axe(a.page, 'project')

  // 9. Account: a token shown once that works, then revoked and refused.
  await a.page.getByRole('link', { name: /Account of/ }).click()
  await a.page.getByLabel('Token name').fill('laptop')
  await a.page.getByRole('button', { name: 'Create token' }).click()
  const token = (await a.page.getByTestId('token-secret').textContent()).trim()
  expect(token.startsWith('zw_'), 'a zw_ token')
  const asToken = () => fetch(base + '/v1/me', { headers: { Authorization: `Bearer ${token}` } })
  expect((await asToken()).status === 200, 'the new token to work')
  await a.page.reload()
  await a.page.getByTestId('tokens').getByText('laptop').waitFor()
  expect(!(await a.page.content()).includes(token), 'the token shown once')
  await a.page.getByRole('button', { name: 'Revoke laptop' }).click()
  await a.page.getByTestId('confirm-revoke').click()
  await a.page.getByTestId('tokens').getByText('laptop').waitFor({ state: 'detached' })
  expect((await asToken()).status === 401, 'the revoked token refused')
  // Sessions: alice signs in from a second browser, sees both here, and signs that one out.
  const a2 = await newPage()
  await a2.page.goto(base + '/signin')
  await a2.page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await a2.page.getByRole('heading', { name: 'Projects' }).waitFor()
  await a.page.reload()
  const sessions = a.page.getByTestId('sessions').getByTestId('session')
  await sessions.nth(1).waitFor()
  expect(await sessions.count() === 2, 'alice\'s two sessions listed')
  expect(await sessions.filter({ hasText: 'this browser' }).count() === 1, 'exactly one session marked as this browser')
  // Each named after the User-Agent that signed in (headless Chromium's), with when it was last seen.
  expect(await sessions.filter({ hasText: 'Chrome on Linux' }).filter({ hasText: 'last seen' }).count() === 2, 'both sessions named by their browser, with their last use')
  await sessions.filter({ hasNotText: 'this browser' }).getByRole('button', { name: /^Sign out Chrome on Linux, signed in/ }).click()
  await a.page.getByTestId('confirm-end-session').click()
  await sessions.nth(1).waitFor({ state: 'detached' })
  expect((await a2.page.request.get(base + '/v1/me')).status() === 401, 'the other browser signed out')
  expect((await a.page.request.get(base + '/v1/me')).status() === 200, 'this browser still signed in')
  await a2.context.close()
  await axe(a.page, 'account')
  await a.page.screenshot({ path: join(shots, 'account.png'), fullPage: true })

  // Danger zone: web-app is deleted once its name is typed.
  await a.page.goto(base + `/projects/${seed.project}/settings`)
  await a.page.getByRole('button', { name: 'Delete project' }).click()
  const dialog = a.page.getByRole('dialog')
  const del = dialog.getByRole('button', { name: 'Delete', exact: true })
  expect(await del.isDisabled(), 'Delete disabled until the name is typed')
  await dialog.getByLabel('Type web-app to confirm').fill('web-app')
  await del.click()
  await a.page.waitForURL(base + '/')
  await a.page.getByTestId('projects').getByText('shop', { exact: true }).waitFor()
  await a.page.getByTestId('projects').getByTestId('project-url').filter({ hasText: 'shop.apps.zeitwork.test' }).waitFor()
  expect(await a.page.getByTestId('projects').getByText('web-app', { exact: true }).count() === 0, 'web-app gone from the list')
  expect(a.errors.length === 0, `no page errors, got ${a.errors.join('; ')}`)

  // 10. Someone else: waits for admission, and once admitted cannot see alice's project.
  await hook('/approve?login=bob')
  const b = await newPage()
  await b.page.goto(base + '/signin')
  await b.page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await b.page.getByTestId('waitlist').waitFor()
  await b.page.screenshot({ path: join(shots, 'waitlist.png') })
  await axe(b.page, 'waitlist')
  // alice, the admin, admits bob from her waitlist page; bob's page lets him in by itself.
  await a.page.getByRole('link', { name: 'Waitlist' }).click()
  await a.page.getByTestId('waiting').getByText('bob', { exact: true }).waitFor()
  await a.page.screenshot({ path: join(shots, 'admin-waitlist.png') })
  await axe(a.page, 'admin-waitlist')
  await a.page.getByRole('button', { name: 'Admit bob' }).click()
  await a.page.getByTestId('empty').waitFor()
  await b.page.getByRole('heading', { name: 'Projects' }).waitFor()
  await b.page.goto(base + `/projects/${seed.project}`)
  const err = b.page.getByTestId('error')
  await err.waitFor()
  expect((await err.textContent()).includes('no such project'), 'the stranger to get "no such project"')
  expect(!(await b.page.content()).includes('web-app'), 'nothing of alice\'s project on the stranger\'s page')
  for (const path of [`/projects/${shop}`, `/projects/${shop}/settings`, `/deployments/${first}`]) {
    await b.page.goto(base + path)
    await b.page.getByTestId('error').first().waitFor()
    const html = await b.page.content()
    expect(!html.includes('shop.apps') && !html.includes('DATABASE_URL') && !html.includes('first page'), `nothing of alice's shop on the stranger's ${path}`)
  }
  await b.page.goto(base + '/')
  await b.page.getByTestId('empty').waitFor()

  // 11. Signing out ends alice's session: the dashboard sends her to sign in again.
  await a.page.getByRole('button', { name: 'Sign out', exact: true }).click()
  await a.page.waitForURL('**/signin')
  await a.page.goto(base + '/projects/' + shop)
  await a.page.waitForURL('**/signin')

  expect(foreign.length === 0, `no requests off the origin, got ${foreign.join(', ')}`)
  result.axe = axeResults
  result.cls = cls
  console.log(JSON.stringify({ axe: axeResults, cls, clsDeploymentSources: result.clsDeploymentSources })) // shown by the Go test should a check below fail
  // Accessibility: no serious or critical axe-core violation on any page checked.
  const serious = Object.entries(axeResults).flatMap(([page, r]) => r.seriousOrCritical.map(v => `${page}: ${v}`))
  expect(serious.length === 0, `no serious or critical axe-core violations, got:\n${serious.join('\n')}`)
  // No layout shift on load: cumulative layout shift under 0.1 ("good") on the first load of the
  // projects page and of a deployment page.
  for (const [page, v] of Object.entries(cls)) expect(typeof v === 'number' && v < 0.1, `CLS under 0.1 on ${page}, got ${v}`)
}
finally {
  await browser.close()
}
console.log(JSON.stringify(result))
