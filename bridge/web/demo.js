// The demo page: start an interview, record a microphone, and watch the transcript live (supabase-js on the
// bridge's hub, or on the Supabase project when one is configured). A viewer link opens a read-only tab.
import { InterviewClient, watchTranscript, defaultMode } from './interview-client.js'

const $ = (selector) => document.querySelector(selector)
const SAVED = 'interview-bridge:session' // survives a reload of this tab, so the interview resumes
const LEVEL_TEXT = {
  silent: 'silent: check that the microphone is on and not muted',
  quiet: 'very quiet: move closer or raise the input level (the transcript still works)',
  ok: 'ok',
  clipping: 'clipping: lower the input level'
}

/** @type {{sessionId: string, token: string, realtime: {url: string, apikey: string, topic: string}, createdAt: string, viewer?: boolean} | null} */
let current = null
/** @type {InterviewClient | null} */
let client = null
const ENDED_TEXT = {
  ended: 'The interview has ended; its transcript is complete.',
  abandoned: 'The interview was closed after a long silence (abandoned); its transcript is complete.'
}
let unsubscribe = null

function say (text) { $('#status').textContent = text }

async function api (method, path, token, body) {
  const headers = { authorization: `Bearer ${token}` }
  if (body !== undefined) headers['content-type'] = 'application/json'
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) })
  if (!response.ok) {
    const answer = await response.json().catch(() => ({}))
    throw new Error(`${answer.error ?? response.status}: ${answer.detail ?? response.statusText}`)
  }
  return response
}

// ------------------------------------------------------------------------------------------ transcript
function clock (ms) {
  const seconds = Math.max(0, Math.floor((ms ?? 0) / 1000))
  return `${String(Math.floor(seconds / 60)).padStart(2, '0')}:${String(seconds % 60).padStart(2, '0')}`
}

function lineElement (line) {
  const item = document.createElement('li')
  item.dataset.speaker = line.speaker
  const time = document.createElement('time')
  time.textContent = line.final ? clock(line.start_ms) : '…'
  const speaker = document.createElement('span')
  speaker.className = 'speaker'
  speaker.textContent = line.speaker
  const text = document.createElement('span')
  text.className = 'text'
  text.textContent = line.text
  item.append(time, speaker, text)
  if (line.final) {
    item.dataset.final = ''
    item.dataset.id = line.id
    item.dataset.start = String(line.start_ms ?? 0)
    item.dataset.firstSequence = String(line.first_sequence ?? 0)
  } else {
    item.className = 'partial'
  }
  return item
}

function showLine (line) {
  const list = $('#transcript')
  const partial = [...list.querySelectorAll('li.partial')].find((li) => li.dataset.speaker === line.speaker)
  if (!line.final) {
    const item = lineElement(line)
    if (partial) partial.replaceWith(item)
    else list.append(item)
    return
  }
  if ([...list.querySelectorAll('li[data-final]')].some((li) => li.dataset.id === line.id)) return
  partial?.remove()
  const item = lineElement(line)
  const later = [...list.querySelectorAll('li[data-final]')].find((li) =>
    Number(li.dataset.start) > (line.start_ms ?? 0) ||
    (Number(li.dataset.start) === (line.start_ms ?? 0) && li.dataset.speaker > line.speaker))
  list.insertBefore(item, later ?? list.querySelector('li.partial'))
}

async function follow (session) {
  // subscribe first, then read what is stored: a line made in between arrives one way or the other (and once:
  // showLine skips an id it shows already)
  const { url, apikey, topic } = session.realtime
  const supabase = window.supabase.createClient(url, apikey, { accessToken: async () => session.token })
  unsubscribe = await watchTranscript(supabase, topic, showLine, (status) => {
    if (status !== 'active') say(ENDED_TEXT[status] ?? `The interview is ${status}.`)
  })
  const transcript = await (await api('GET', `/sessions/${session.sessionId}/transcript`, session.token)).json()
  for (const entry of transcript.entries) showLine({ ...entry, final: true })
  $('#exports').hidden = false
}

async function download (format) {
  const response = await api('GET', `/sessions/${current.sessionId}/transcript?format=${format}`, current.token)
  const link = document.createElement('a')
  link.href = URL.createObjectURL(await response.blob())
  link.download = `transcript-${current.sessionId}.${format === 'text' ? 'txt' : format}`
  link.click()
  URL.revokeObjectURL(link.href)
}

// ------------------------------------------------------------------------------------------ sessions
async function tenantKey () {
  const typed = $('#api-key').value.trim()
  if (typed || document.body.dataset.demoTenant !== 'on') return typed
  const response = await fetch('/demo/tenant', { method: 'POST' })
  if (!response.ok) throw new Error('no demo tenant on this bridge: paste a tenant API key')
  return (await response.json()).api_key
}

/** A new session; false (and the reason on screen) when none could be made. */
async function startSession () {
  try {
    const key = await tenantKey()
    if (!key) throw new Error('paste a tenant API key first')
    const created = await (await api('POST', '/sessions', key, { metadata: { source: 'demo page' } })).json()
    const session = {
      sessionId: created.session.id, token: created.token, realtime: created.realtime, createdAt: created.session.created_at
    }
    sessionStorage.setItem(SAVED, JSON.stringify(session))
    await open(session)
    return true
  } catch (error) {
    say(`Could not start: ${error.message}`)
    return false
  }
}

async function startInterview (event) {
  event.preventDefault()
  if (await startSession()) say('Ready: choose a speaker and press Record.')
}

async function viewerLink (session) {
  const { token } = await (await api('POST', `/sessions/${session.sessionId}/viewer-token`, session.token)).json()
  const local = session.realtime.apikey === session.token // the bridge's own hub takes the token as the key
  const hash = new URLSearchParams({
    token, url: session.realtime.url, apikey: local ? token : session.realtime.apikey, topic: session.realtime.topic
  })
  return `${location.origin}/?view=${encodeURIComponent(session.sessionId)}#${hash}`
}

async function open (session) {
  current = session
  $('#start-form').hidden = true
  $('#session-info').hidden = false
  $('#session-id').textContent = session.sessionId
  $('#recorder').hidden = Boolean(session.viewer)
  $('#end').disabled = false
  await follow(session)
  if (!session.viewer) $('#viewer-link').href = await viewerLink(session)
  else $('#viewer-link').parentElement.hidden = true
}

async function endInterview () {
  if (client?.recording) await toggleRecording()
  await api('POST', `/sessions/${current.sessionId}/end`, current.token)
  sessionStorage.removeItem(SAVED)
  say(ENDED_TEXT.ended)
  $('#record').disabled = true
  $('#end').disabled = true
}

function newInterview () {
  sessionStorage.removeItem(SAVED)
  location.assign('/')
}

// ------------------------------------------------------------------------------------------ recording
async function toggleRecording () {
  const button = $('#record')
  if (client?.recording) {
    button.disabled = true
    say('Stopping: sending what is left…')
    const lost = await client.stop()
    button.disabled = false
    button.textContent = 'Record'
    button.setAttribute('aria-pressed', 'false')
    $('#level-state').textContent = 'not recording'
    say(lost ? `Stopped; ${lost} frames could not be stored (the connection did not come back).` : 'Stopped; every chunk is stored.')
    return
  }
  if (!current && !(await startSession())) return // Record alone starts an interview too
  client = new InterviewClient({
    sessionId: current.sessionId, token: current.token, speaker: $('#speaker').value.trim() || 'candidate',
    mode: $('#mode').value
  })
  client.addEventListener('level', ({ detail }) => {
    $('#level').value = Math.max(-60, detail.peakDb)
    $('#level-state').textContent = LEVEL_TEXT[detail.state]
    $('#level-state').dataset.state = detail.state
  })
  client.addEventListener('retry', ({ detail }) => {
    document.body.dataset.retries = String(Number(document.body.dataset.retries ?? 0) + 1)
    say(`Network trouble (${detail.reason}): chunk ${detail.sequence} again in ${(detail.delayMs / 1000).toFixed(1)} s`)
  })
  client.addEventListener('sent', ({ detail }) => say(`Recording: chunk ${detail.sequence} stored.`))
  client.addEventListener('rejected', ({ detail }) => say(`Chunk ${detail.sequence} refused: ${detail.error}`))
  client.addEventListener('fallback', ({ detail }) => { $('#mode').value = detail.mode })
  try {
    await client.start()
  } catch (error) {
    say(`Cannot record: ${error.message}`)
    return
  }
  sessionStorage.setItem(SAVED, JSON.stringify({ ...current, speaker: client.speaker, mode: client.mode }))
  button.textContent = 'Stop'
  button.setAttribute('aria-pressed', 'true')
  say(`Recording as ${client.speaker}, from chunk ${client.nextSequence}.`)
}

// ------------------------------------------------------------------------------------------ start-up
async function boot () {
  $('#mode').value = defaultMode()
  $('#start-form').addEventListener('submit', startInterview)
  $('#record').addEventListener('click', toggleRecording)
  $('#end').addEventListener('click', () => endInterview().catch((error) => say(`Could not end: ${error.message}`)))
  $('#new-session').addEventListener('click', newInterview)
  for (const button of document.querySelectorAll('#exports button')) {
    button.addEventListener('click', () => download(button.dataset.format).catch((error) => say(error.message)))
  }
  if (document.body.dataset.demoTenant === 'on') {
    $('#key-row').hidden = true
    $('#demo-note').hidden = false
  }
  const viewing = new URLSearchParams(location.search).get('view')
  if (viewing) {
    const hash = new URLSearchParams(location.hash.slice(1))
    const realtime = { url: hash.get('url'), apikey: hash.get('apikey'), topic: hash.get('topic') }
    await open({ sessionId: viewing, token: hash.get('token'), realtime, viewer: true })
    say('Viewing live (read-only).')
    return
  }
  const saved = JSON.parse(sessionStorage.getItem(SAVED) ?? 'null')
  if (saved) {
    if (saved.speaker) $('#speaker').value = saved.speaker
    if (saved.mode) $('#mode').value = saved.mode
    await open(saved)
    say('Interview resumed: press Record to go on where it stopped.')
    return
  }
  say('Start an interview.')
}

boot().catch((error) => say(`Something went wrong: ${error.message}`))
