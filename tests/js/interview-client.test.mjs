// The browser client's sending rules under Node's test runner, against a fake fetch: order, retries with the
// same sequence number, Retry-After, refusals, the end of a session, and the WAV and level helpers.
// Run by tests/e2e/test_client_js.py (node --test).
import assert from 'node:assert/strict'
import { test } from 'node:test'

import {
  InterviewClient, encodeWav, levelState, pcm16, resample, toBase64, WAV_RATE
} from '../../bridge/web/interview-client.js'

const json = (status, body, headers = {}) => new Response(JSON.stringify(body), {
  status, headers: { 'content-type': 'application/json', ...headers }
})

/** A fake bridge: answers process-audio from `script` (a function per call), records what was sent. */
function fakeBridge (script = () => json(200, { status: 'accepted' }), nextSequence = {}) {
  const sent = []
  const fetch = async (url, init) => {
    if (init.method === 'GET') return json(200, { id: 's1', next_sequence: nextSequence })
    const body = JSON.parse(init.body)
    sent.push(body)
    return script(body, sent.length)
  }
  return { sent, fetch }
}

function client (bridge, waits = []) {
  return new InterviewClient({
    sessionId: 's1', token: 'tok', speaker: 'candidate', baseUrl: 'http://bridge.test', fetch: bridge.fetch,
    sleep: async (ms) => { waits.push(ms) }
  })
}

const bytes = (n, fill = 1) => new Uint8Array(n).fill(fill)

test('chunks go one at a time, in order, with consecutive sequence numbers', async () => {
  const bridge = fakeBridge()
  const c = client(bridge)
  const sent = []
  c.addEventListener('sent', (event) => sent.push(event.detail))
  for (let i = 1; i <= 3; i++) c.send(bytes(10, i), 'audio/webm')
  await c.drain()
  assert.deepEqual(bridge.sent.map((b) => b.sequence_number), [0, 1, 2])
  assert.deepEqual(bridge.sent.map((b) => Buffer.from(b.audio_chunk, 'base64')[0]), [1, 2, 3])
  assert.equal(bridge.sent[0].speaker, 'candidate')
  assert.equal(bridge.sent[0].mime_type, 'audio/webm')
  assert.deepEqual(sent.map((d) => [d.sequence, d.status]), [[0, 'accepted'], [1, 'accepted'], [2, 'accepted']])
  assert.equal(c.queued, 0)
})

test('a network error, a 503 and a 429 are retried with the same sequence number and body, honouring Retry-After', async () => {
  const answers = [
    () => { throw new TypeError('Failed to fetch') },
    () => json(503, { error: 'store_unavailable' }, { 'retry-after': '1' }),
    () => json(429, { error: 'rate_limited' }, { 'retry-after': '3' }),
    () => json(200, { status: 'duplicate' })
  ]
  const bridge = fakeBridge((body, call) => (answers[call - 1] ?? (() => json(200, { status: 'accepted' })))())
  const waits = []
  const c = client(bridge, waits)
  const retries = []
  c.addEventListener('retry', (event) => retries.push(event.detail))
  c.send(bytes(20), 'audio/wav')
  c.send(bytes(20, 2), 'audio/wav')
  await c.drain()
  assert.deepEqual(bridge.sent.map((b) => b.sequence_number), [0, 0, 0, 0, 1])
  assert.equal(new Set(bridge.sent.slice(0, 4).map((b) => b.audio_chunk)).size, 1)
  assert.deepEqual(retries.map((r) => r.reason), ['Failed to fetch', 'HTTP 503', 'HTTP 429'])
  assert.ok(waits[1] >= 1000 && waits[2] >= 3000, `waits ${waits}`)
  assert.ok(waits[0] < waits[2])
})

test('a refused chunk is reported and the next one still goes; a closed session stops the client', async () => {
  const bridge = fakeBridge((body) => {
    if (body.sequence_number === 0) return json(400, { error: 'invalid_audio', detail: 'not audio' })
    if (body.sequence_number === 2) return json(409, { error: 'session_closed', detail: 'ended' })
    return json(200, { status: 'accepted' })
  })
  const c = client(bridge)
  const rejected = []
  c.addEventListener('rejected', (event) => rejected.push(event.detail))
  for (let i = 0; i < 5; i++) c.send(bytes(8), 'audio/wav')
  await c.drain()
  assert.deepEqual(bridge.sent.map((b) => b.sequence_number), [0, 1, 2])
  assert.deepEqual(rejected.map((r) => [r.sequence, r.status, r.error]), [[0, 400, 'invalid_audio'], [2, 409, 'session_closed']])
  assert.equal(c.closed, true)
  assert.equal(c.queued, 0)
})

test('an empty blob uses no sequence number, and resumeAt reads the speaker\'s next_sequence', async () => {
  const bridge = fakeBridge(undefined, { candidate: 7, interviewer: 2 })
  const c = client(bridge)
  assert.equal(await c.resumeAt(), 7)
  c.send(new Uint8Array(0), 'audio/mp4')
  c.send(bytes(4), 'audio/mp4')
  await c.drain()
  assert.deepEqual(bridge.sent.map((b) => b.sequence_number), [0])
})

test('watch() turns the topic\'s broadcasts into partial, final and session_status events', async () => {
  const handlers = {}
  const supabase = {
    channel: () => ({
      on: (_, { event }, handler) => { handlers[event] = handler },
      subscribe: (callback) => callback('SUBSCRIBED')
    }),
    removeChannel: async () => {}
  }
  const c = client(fakeBridge())
  const seen = []
  for (const type of ['partial', 'final', 'session_status']) c.addEventListener(type, (e) => seen.push([type, e.detail]))
  await c.watch(supabase, 'session:s1')
  handlers.transcript_partial({ payload: { speaker: 'a', text: 'hel', through_sequence: 1 } })
  handlers.transcript_entry({ payload: { id: 'e1', speaker: 'a', text: 'hello', start_ms: 0 } })
  handlers.session_status({ payload: { status: 'ended' } })
  assert.deepEqual(seen.map(([type, d]) => [type, d.text ?? d.status, d.final]), [
    ['partial', 'hel', false], ['final', 'hello', true], ['session_status', 'ended', undefined]
  ])
})

test('WAV chunks are 16-bit mono at 16 kHz, resampled from the microphone rate', () => {
  const samples = new Float32Array(48000).map((_, i) => Math.sin(i / 10))
  const pcm = resample(samples, 48000, WAV_RATE)
  assert.equal(pcm.length, 16000)
  const wav = encodeWav(pcm, WAV_RATE)
  const view = new DataView(wav.buffer)
  assert.equal(String.fromCharCode(...wav.subarray(0, 4)), 'RIFF')
  assert.equal(view.getUint16(22, true), 1) // mono
  assert.equal(view.getUint32(24, true), 16000)
  assert.equal(view.getUint16(34, true), 16)
  assert.equal(view.getUint32(40, true), 32000)
  assert.equal(wav.length, 44 + 32000)
  assert.deepEqual(wav.subarray(44), pcm16(pcm)) // the stream mode's frames are a WAV's data, without its header
})

test('the level meter says silent, very quiet, ok and clipping, and base64 survives large chunks', () => {
  assert.deepEqual([-Infinity, -95, -50, -20, 0].map(levelState), ['silent', 'silent', 'quiet', 'ok', 'clipping'])
  const big = new Uint8Array(200_000).map((_, i) => i % 251)
  assert.deepEqual(new Uint8Array(Buffer.from(toBase64(big), 'base64')), big)
})
