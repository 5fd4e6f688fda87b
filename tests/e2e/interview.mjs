// Drives the demo page in a real headless Chromium whose fake microphone plays a WAV file, and prints one JSON
// line with what the page showed. The pytest side (tests/e2e/test_browser.py) starts the bridge and checks it.
//
// node tests/e2e/interview.mjs --url=http://127.0.0.1:PORT --audio=speech.wav --seconds=14 [--record-only=1]
//      [--mode=media-recorder|wav] [--drop-at=S --drop-for=S] [--reload-at=S] [--viewer=1] [--screenshot=PATH]
//      [--export=text|vtt|srt]
// With --record-only=1 the page's #record is the only thing pressed to start (no key, no Start button).
import { chromium } from 'playwright-core'

const args = {}
for (const arg of process.argv.slice(2)) {
  const match = /^--([^=]+)=(.*)$/s.exec(arg)
  if (match) args[match[1]] = match[2]
}
const seconds = Number(args.seconds ?? 14)
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
const log = []

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--headless', '--no-sandbox', '--disable-gpu',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${args.audio}`, // looped: the file ends in a long silence
    '--autoplay-policy=no-user-gesture-required'
  ]
})
let page = null
const result = { finals: [], viewer_finals: [], retries: 0, failed_requests: 0, statuses: [], csp_violations: [] }
// Chromium reports what the page's Content-Security-Policy blocked on the console
const noteCsp = (text) => { if (text.includes('Content Security Policy')) result.csp_violations.push(text) }
try {
  const context = await browser.newContext({ viewport: { width: 900, height: 800 }, acceptDownloads: true })
  page = await context.newPage()
  page.on('console', (message) => {
    log.push(`page ${message.type()}: ${message.text()}`)
    noteCsp(message.text())
  })
  page.on('pageerror', (error) => log.push(`page error: ${error.message}`))
  page.on('requestfailed', (request) => {
    if (request.url().includes('process-audio')) result.failed_requests++
  })
  // the stream mode's socket goes through Playwright, so a drop can cut it like a lost network would
  const sockets = new Set()
  let dropping = false
  if (args.mode === 'stream') {
    await page.routeWebSocket(/\/functions\/v1\/stream/, (ws) => {
      if (dropping) return ws.close({ code: 3000, reason: 'network down' })
      ws.connectToServer()
      sockets.add(ws)
    })
  }
  await page.goto(args.url)
  await page.waitForFunction(() => !document.querySelector('#status').textContent.startsWith('Loading'), null,
    { polling: 100 })
  if (args['record-only'] !== '1') { // else #record alone starts the interview
    await page.click('#start')
    await page.waitForSelector('#session-info:not([hidden])', { timeout: 15000 })
  }
  if (args.mode) await page.selectOption('#mode', args.mode)
  result.mode = await page.inputValue('#mode')
  const record = async () => {
    await page.click('#record')
    await page.waitForSelector('#record[aria-pressed="true"]', { timeout: 15000 })
  }
  await record()
  const started = Date.now()
  const at = (s) => sleep(Math.max(0, started + s * 1000 - Date.now()))
  result.session_id = (await page.textContent('#session-id')).trim()

  let viewer = null
  if (args.viewer === '1') {
    const href = await page.getAttribute('#viewer-link', 'href')
    viewer = await context.newPage()
    viewer.on('pageerror', (error) => log.push(`viewer error: ${error.message}`))
    viewer.on('console', (message) => noteCsp(message.text()))
    await viewer.goto(href)
    await viewer.waitForFunction(() => document.querySelector('#status').textContent.includes('Viewing live'), null,
      { timeout: 15000, polling: 250 })
    result.viewer_recorder_hidden = await viewer.isHidden('#recorder')
  }

  const events = []
  if (args['drop-at']) events.push([Number(args['drop-at']), 'drop'])
  if (args['reload-at']) events.push([Number(args['reload-at']), 'reload'])
  events.sort((a, b) => a[0] - b[0])
  for (const [when, what] of events) {
    await at(when)
    result.level_during_speech = result.level_during_speech ?? await page.getAttribute('#level-state', 'data-state')
    if (what === 'drop' && result.mode === 'stream') { // the socket cut, and new ones refused, for the drop
      dropping = true
      for (const ws of sockets) await ws.close({ code: 3000, reason: 'network down' })
      sockets.clear()
      await sleep(Number(args['drop-for'] ?? 4) * 1000)
      result.status_during_drop = await page.textContent('#status')
      dropping = false
    } else if (what === 'drop') {
      await page.route('**/functions/v1/process-audio', (route) => route.abort('internetdisconnected'))
      await sleep(Number(args['drop-for'] ?? 4) * 1000)
      result.status_during_drop = await page.textContent('#status')
      await page.unroute('**/functions/v1/process-audio')
    } else {
      await page.reload()
      await page.waitForFunction(() => document.querySelector('#status').textContent.includes('resumed'))
      result.finals_after_reload = await page.$$eval('#transcript li[data-final]', (items) => items.length)
      await record()
      result.resumed_status = await page.textContent('#status')
    }
  }
  await at(seconds)
  result.level_state = await page.getAttribute('#level-state', 'data-state')
  result.status_before_stop = await page.textContent('#status')
  await page.click('#record')
  await page.waitForFunction(() => document.querySelector('#status').textContent.startsWith('Stopped'), null,
    { timeout: 60000, polling: 250 })
  await page.click('#end')
  await page.waitForFunction(() => document.querySelector('#status').textContent.includes('has ended'), null,
    { timeout: 60000, polling: 250 })
  await sleep(500) // the last lines' broadcasts
  result.finals = await page.$$eval('#transcript li[data-final] .text', (items) => items.map((i) => i.textContent))
  result.final_ids = await page.$$eval('#transcript li[data-final]', (items) => items.map((i) => i.dataset.id))
  result.speakers = await page.$$eval('#transcript li[data-final] .speaker', (items) => items.map((i) => i.textContent))
  if (viewer) {
    await viewer.waitForFunction((count) => document.querySelectorAll('#transcript li[data-final]').length >= count,
      result.finals.length, { timeout: 15000, polling: 250 }).catch(() => {})
    result.viewer_finals = await viewer.$$eval('#transcript li[data-final] .text', (items) => items.map((i) => i.textContent))
  }
  result.retries = Number(await page.getAttribute('body', 'data-retries') ?? 0)
  if (args.export) { // the page's export button, as a person would download it
    const [download] = await Promise.all([page.waitForEvent('download'), page.click(`#exports button[data-format="${args.export}"]`)])
    result.export_name = download.suggestedFilename()
    const chunks = []
    for await (const chunk of await download.createReadStream()) chunks.push(chunk)
    result.export_text = Buffer.concat(chunks).toString('utf8')
  }
  if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true })
} catch (error) {
  result.error = String(error?.stack ?? error)
  result.status_at_error = await page?.textContent('#status').catch(() => null)
} finally {
  result.log = log.slice(-50)
  await browser.close()
  process.stdout.write(JSON.stringify(result) + '\n')
}
