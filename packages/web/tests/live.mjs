// A new user's first minutes in the dashboard, on `zeitwork dev` (test/web's TestDashboardGoesLive
// starts it): sign in through the GitHub emulator, install the App, import a repository, watch the
// build log stream and the deployment go live without a reload, and open the app's URL.
//
//   BASE_URL    the dev API serving the dashboard;  REPOSITORY  owner/name to import
//   GREETING    what the app answers with;  WORK  a clone of the repository to push from
//   CHROMIUM    the browser;  SCREENSHOTS  a directory
//
// It prints one JSON line with what it measured; any failed expectation throws (exit 1).
import { chromium } from 'playwright-core'
import { execFileSync } from 'node:child_process'
import { mkdirSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'

const { BASE_URL: base, REPOSITORY: repository, GREETING: greeting, WORK: work, SCREENSHOTS: shots } = process.env
if (!base || !repository || !greeting || !work || !shots) throw new Error('BASE_URL, REPOSITORY, GREETING, WORK and SCREENSHOTS are required')
mkdirSync(shots, { recursive: true })

function expect(cond, what) {
  if (!cond) throw new Error(`expected ${what}`)
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  headless: true,
  // *.localhost is this machine, as the dev edge's URLs assume.
  args: ['--no-sandbox', '--disable-background-networking', '--disable-dev-shm-usage', '--host-resolver-rules=MAP *.localhost 127.0.0.1'],
})
const result = {}
try {
  const context = await browser.newContext({ viewport: { width: 1200, height: 800 } })
  context.setDefaultTimeout(30_000)
  const page = await context.newPage()
  const errors = []
  page.on('pageerror', e => errors.push(String(e)))

  await page.goto(base + '/')
  await page.getByRole('link', { name: 'Sign in with GitHub' }).click()
  await page.getByRole('heading', { name: 'Projects' }).waitFor()

  // Install the App (the emulator's install page answers at once), then import the repository,
  // sized for the one simulated node, with the app's health check.
  await page.getByRole('link', { name: 'New project' }).click()
  await page.getByTestId('no-installation').waitFor()
  await page.getByRole('link', { name: 'Install the GitHub App' }).click()
  await page.waitForURL('**/projects/new')
  await page.getByRole('radio', { name: repository }).check()
  await page.getByText('How it runs').click()
  await page.getByLabel('Health check path').fill('/healthz')
  await page.getByLabel('CPU per instance (millicores)').fill('100')
  await page.getByLabel('Memory per instance (MiB)').fill('64')
  const started = Date.now()
  await page.getByRole('button', { name: 'Create and deploy' }).click()
  await page.waitForURL(/\/projects\/[0-9a-f-]{36}$/)
  await page.getByTestId('deployments').getByRole('link', { name: greeting }).click()
  await page.waitForURL(/\/deployments\/[0-9a-f-]{36}$/)

  // The build log streams while the page stays open, and the state follows to active.
  const log = page.getByTestId('log')
  await log.locator('div').first().waitFor({ timeout: 120_000 })
  result.firstLogLineMs = Date.now() - started
  await page.getByTestId('deployment-status').filter({ hasText: 'active' }).waitFor({ timeout: 180_000 })
  result.activeMs = Date.now() - started
  // Its instances, healthy, with their node; and their output in the runtime log.
  const healthy = page.getByTestId('instances').getByRole('row').filter({ hasText: 'healthy' })
  await healthy.nth(2).waitFor()
  await page.getByTestId('runtime-log').getByText('listening on port').first().waitFor({ timeout: 60_000 })
  result.runtimeLogMs = Date.now() - started
  const url = await page.getByTestId('deployment-url').getAttribute('href')
  await page.screenshot({ path: join(shots, 'deployment-live.png') })
  result.url = url

  // Its URL answers with the app, in the browser.
  const [app] = await Promise.all([context.waitForEvent('page'), page.getByTestId('deployment-url').click()])
  async function answers(text) {
    let body = ''
    for (let i = 0; i < 90 && !body.includes(text); i++) {
      await app.waitForLoadState()
      body = await app.content()
      if (!body.includes(text)) {
        await new Promise(r => setTimeout(r, 1000))
        await app.reload()
      }
    }
    expect(body.includes(text), `${url} to answer with ${text}, got ${body.slice(0, 200)}`)
  }
  await answers(greeting)

  // A second push goes live on the open project page; rolling back to the first commit, with one
  // click and a confirmation, puts it back on the same URL.
  const again = 'hello again'
  writeFileSync(join(work, 'Dockerfile'), `FROM scratch\nCOPY app /app\nENV GREETING="${again}"\nENTRYPOINT ["/app"]\n`)
  const git = (...args) => execFileSync('git', args, { cwd: work, stdio: 'pipe' })
  git('add', '.')
  git('-c', 'user.name=Dev', '-c', 'user.email=dev@zeitwork.localhost', 'commit', '-q', '-m', again)
  await page.getByRole('link', { name: '← Project' }).click()
  await page.getByTestId('production-url').waitFor()
  git('push', '-q', 'origin', 'main')
  const row = text => page.getByTestId('deployments').getByRole('listitem').filter({ hasText: text })
  await row(again).getByText('live', { exact: true }).waitFor({ timeout: 180_000 })
  await answers(again)
  const rolled = Date.now()
  await row(greeting).getByRole('button', { name: /Roll back to/ }).click()
  await page.getByTestId('confirm-rollback').click()
  await row(greeting).getByText('live', { exact: true }).waitFor({ timeout: 120_000 })
  await answers(greeting)
  result.rollbackMs = Date.now() - rolled
  await page.screenshot({ path: join(shots, 'project-rolled-back.png') })
  expect(errors.length === 0, `no page errors, got ${errors.join('; ')}`)
}
finally {
  await browser.close()
}
console.log(JSON.stringify(result))
