// From a page on each given origin, a real Chromium calls the bridge's API with fetch, as a platform's web app
// would, and prints one JSON line: per origin, the status and the X-Request-Id the page could read, or the error.
//
// node tests/e2e/cors.mjs --bridge=http://127.0.0.1:PORT --key=ibk_... --origins=http://127.0.0.1:A,http://127.0.0.1:B
import { chromium } from 'playwright-core'

const args = {}
for (const arg of process.argv.slice(2)) {
  const match = /^--([^=]+)=(.*)$/s.exec(arg)
  if (match) args[match[1]] = match[2]
}
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu']
})
const result = {}
try {
  for (const origin of args.origins.split(',')) {
    const page = await browser.newPage()
    await page.goto(`${origin}/`)
    result[origin] = await page.evaluate(async ({ bridge, key }) => {
      try {
        const response = await fetch(`${bridge}/sessions`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ speakers: ['candidate'] })
        })
        return { status: response.status, request_id: response.headers.get('x-request-id') }
      } catch (error) {
        return { error: String(error) }
      }
    }, { bridge: args.bridge, key: args.key })
    await page.close()
  }
} finally {
  await browser.close()
  process.stdout.write(JSON.stringify(result) + '\n')
}
