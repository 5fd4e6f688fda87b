// interview-client.js: the browser side of interview-bridge, a plain ES module (no build step).
//
// It captures one microphone, cuts it into ~2 s chunks, and POSTs them to process-audio in order with one
// sequence number per chunk. A failed send (network error, 5xx, 408, 429) is retried with the same number, so a
// retry is idempotent: the bridge answers a replay `duplicate`. `Retry-After` is honoured. After a page reload,
// `start()` asks the bridge for the speaker's `next_sequence` and goes on from there with a fresh container
// header. Lines of the transcript come from Realtime (`watchTranscript`), not from the answers.
//
// Three modes:
// - "stream" (the default): an AudioWorklet takes raw PCM and sends 250 ms frames of 16 kHz PCM over one
//   WebSocket (/functions/v1/stream); each frame is acknowledged once stored, and lines come back sooner than
//   with 2 s chunks. Where the socket cannot be opened (a proxy without WebSockets), start() falls back to
//   "media-recorder". A dropped socket is opened again and resumes at the server's next_sequence.
// - "media-recorder" (HTTPS chunks): WebM/Opus, or fragmented MP4 where WebM is unsupported (Safari). The first
//   chunk carries the container header; the rest are continuations.
// - "wav" (HTTPS chunks): an AudioWorklet takes raw PCM, and each chunk is a standalone 16 kHz mono WAV.

/** @typedef {"stream" | "media-recorder" | "wav"} CaptureMode */

/**
 * @typedef {object} ClientOptions
 * @property {string} sessionId
 * @property {string} token  session token (or tenant key)
 * @property {string} speaker
 * @property {string} [baseUrl]  the bridge's origin; default: this page's
 * @property {CaptureMode} [mode]  default: `defaultMode()`
 * @property {number} [chunkMs]  default 2000
 * @property {number} [maxDelayMs]  the longest wait between retries; default 8000
 * @property {typeof fetch} [fetch]
 * @property {(ms: number) => Promise<void>} [sleep]  how retries wait (tests pass a fake clock)
 */

/**
 * @typedef {object} Line
 * @property {string} speaker
 * @property {string} text
 * @property {boolean} final
 * @property {string} [id]  final lines: the entry's id
 * @property {number} [start_ms]
 * @property {number} [end_ms]
 */

/** @typedef {"silent" | "quiet" | "ok" | "clipping"} LevelState */

export const WAV_RATE = 16000
export const STREAM_FRAME_MS = 250
const RETRIED = new Set([408, 425, 429, 500, 502, 503, 504])
const QUIET_DBFS = -45 // the bridge still transcribes this; the meter says the microphone is far or low
const CLIP_DBFS = -0.1

/** MediaRecorder's best type here: WebM/Opus, else fragmented MP4 (Safari), else Ogg/Opus; null if none. */
export function pickMimeType () {
  if (typeof MediaRecorder === 'undefined') return null
  const types = ['audio/webm;codecs=opus', 'audio/webm', 'audio/mp4', 'audio/ogg;codecs=opus']
  return types.find((type) => MediaRecorder.isTypeSupported(type)) ?? null
}

/** @returns {CaptureMode} "stream" where the browser has WebSocket and AudioWorklet, else an HTTPS mode. */
export function defaultMode () {
  if (typeof WebSocket !== 'undefined' && typeof AudioWorkletNode !== 'undefined') return 'stream'
  return httpsMode()
}

/** @returns {CaptureMode} the HTTPS chunk mode: "media-recorder" where it records a supported type, else "wav". */
export function httpsMode () {
  return pickMimeType() ? 'media-recorder' : 'wav'
}

/**
 * One speaker's microphone, sent to the bridge. Events (CustomEvent, data in `detail`):
 * `sent` {sequence, status}, `retry` {sequence, attempt, delayMs, reason}, `rejected` {sequence, status, error},
 * `state` {recording, queued}, `level` {peakDb, state}; after `watch()`: `partial` and `final` (a Line) and
 * `session_status` {status}.
 */
export class InterviewClient extends EventTarget {
  /** @param {ClientOptions} options */
  constructor (options) {
    super()
    this.sessionId = options.sessionId
    this.token = options.token
    this.speaker = options.speaker
    this.baseUrl = (options.baseUrl ?? globalThis.location?.origin ?? '').replace(/\/$/, '')
    /** @type {CaptureMode} */
    this.mode = options.mode ?? defaultMode()
    this.chunkMs = options.chunkMs ?? 2000
    this.maxDelayMs = options.maxDelayMs ?? 8000
    this._fetch = options.fetch ?? globalThis.fetch.bind(globalThis)
    this._sleep = options.sleep ?? sleep
    /** @type {{sequence: number, data: Uint8Array, mimeType: string}[]} */
    this._queue = []
    this._nextSequence = 0
    this._sending = null
    this._capture = null
    this._meter = null
    this.recording = false
    this.closed = false
  }

  /** Chunks (or frames) captured and not yet acknowledged. */
  get queued () { return this._queue.length + (this._socket?.unacked.length ?? 0) }

  /** The sequence number the next chunk gets. */
  get nextSequence () { return this._socket ? this._socket.nextSequence : this._nextSequence }

  /**
   * Start capturing `stream` (default: ask for the microphone). Resumes at the bridge's `next_sequence` for this
   * speaker, so a reloaded page neither repeats nor skips a number.
   * @param {MediaStream} [stream]
   */
  async start (stream) {
    if (this.recording) return
    stream = stream ?? await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: false, autoGainControl: false, channelCount: 1 }
    })
    this.stream = stream
    if (this.mode === 'stream') {
      this._socket = new SocketSender(this)
      if (!await this._socket.open()) { // no socket here: HTTPS chunks instead
        this._socket = null
        this.mode = httpsMode()
        this._emit('fallback', { mode: this.mode })
      }
    }
    if (this.mode !== 'stream' && this._queue.length === 0) this._nextSequence = await this.resumeAt()
    this._meter = new LevelMeter(stream, (detail) => this._emit('level', detail))
    if (this.mode === 'stream') {
      this._capture = await PcmCapture.open(stream, STREAM_FRAME_MS, (samples) => this._socket.send(pcm16(samples)))
    } else {
      this._capture = this.mode === 'wav'
        ? await PcmCapture.open(stream, this.chunkMs, (samples) => this._enqueue(encodeWav(samples, WAV_RATE), 'audio/wav'))
        : MediaRecorderCapture.open(stream, this.chunkMs, (data, type) => this._enqueue(data, type))
    }
    this.recording = true
    this._emit('state', { recording: true, queued: this.queued })
  }

  /** Stop capturing; resolves once every captured chunk is acknowledged (or given up as rejected), with how many
   * streamed frames could not be stored (0 when all were). */
  async stop () {
    if (this._capture) await this._capture.stop()
    this._capture = null
    this._meter?.stop()
    this._meter = null
    for (const track of this.stream?.getTracks() ?? []) track.stop()
    this.recording = false
    const lost = this._socket ? await this._socket.end() : 0
    this._socket = null
    await this.drain()
    this._emit('state', { recording: false, queued: this.queued })
    return lost
  }

  /** Resolves when the queue is empty. */
  async drain () {
    while (this._sending) await this._sending
  }

  /** The speaker's next sequence number as the bridge has it (0 for a new speaker). */
  async resumeAt () {
    const response = await this._request('GET', `/sessions/${encodeURIComponent(this.sessionId)}`)
    if (!response.ok) throw new Error(`cannot read the session: ${response.status} ${await response.text()}`)
    const session = await response.json()
    return session.next_sequence?.[this.speaker] ?? 0
  }

  /**
   * Queue one chunk of your own capture (bytes of `mimeType`); it is sent in order with the next sequence number.
   * @param {Uint8Array} data
   * @param {string} mimeType
   */
  send (data, mimeType) {
    this._enqueue(data, mimeType)
  }

  /**
   * Follow the session's lines through Realtime as this client's `partial`, `final` and `session_status` events.
   * @param {any} supabase  a supabase-js client
   * @param {string} topic  `realtime.topic` from POST /sessions
   */
  async watch (supabase, topic) {
    this._unwatch = await watchTranscript(supabase, topic, (line) => this._emit(line.final ? 'final' : 'partial', line),
      (status) => this._emit('session_status', { status }))
  }

  /** Stop following the session's lines. */
  async unwatch () {
    await this._unwatch?.()
    this._unwatch = null
  }

  _enqueue (data, mimeType) {
    if (data.byteLength === 0) return // Safari emits empty blobs: nothing to send, no number used
    this._queue.push({ sequence: this._nextSequence++, data, mimeType })
    this._emit('state', { recording: this.recording, queued: this.queued })
    this._kick()
  }

  _kick () {
    if (this._sending) return
    this._sending = this._sendAll().finally(() => {
      this._sending = null
      if (this._queue.length > 0 && !this.closed) this._kick() // a chunk queued while the loop was ending
    })
  }

  async _sendAll () {
    while (this._queue.length > 0 && !this.closed) {
      const chunk = this._queue[0]
      const outcome = await this._sendWithRetries(chunk)
      this._queue.shift()
      this._emit(outcome.ok ? 'sent' : 'rejected', { sequence: chunk.sequence, ...outcome })
      if (outcome.status === 409 && outcome.error === 'session_closed') {
        this.closed = true
        this._queue.length = 0
        await this._capture?.stop()
        this.recording = false
      }
      this._emit('state', { recording: this.recording, queued: this.queued })
    }
  }

  async _sendWithRetries (chunk) {
    const body = JSON.stringify({
      session_id: this.sessionId,
      speaker: this.speaker,
      sequence_number: chunk.sequence,
      audio_chunk: toBase64(chunk.data),
      mime_type: chunk.mimeType
    })
    for (let attempt = 1; ; attempt++) {
      let delayMs = Math.min(this.maxDelayMs, 250 * 2 ** attempt) * (0.75 + Math.random() / 2)
      let reason
      try {
        const response = await this._request('POST', '/functions/v1/process-audio', body)
        if (response.ok) return { ok: true, status: (await response.json()).status }
        if (!RETRIED.has(response.status)) {
          const answer = await response.json().catch(() => ({}))
          return { ok: false, status: response.status, error: answer.error ?? 'error', detail: answer.detail }
        }
        const after = Number(response.headers.get('retry-after'))
        if (after > 0) delayMs = Math.max(delayMs, after * 1000)
        reason = `HTTP ${response.status}`
      } catch (error) {
        reason = String(error?.message ?? error) // offline, connection reset: the chunk may or may not be stored
      }
      this._emit('retry', { sequence: chunk.sequence, attempt, delayMs, reason })
      await this._sleep(delayMs)
    }
  }

  _request (method, path, body) {
    const headers = { authorization: `Bearer ${this.token}` }
    if (body !== undefined) headers['content-type'] = 'application/json'
    return this._fetch(this.baseUrl + path, { method, headers, body })
  }

  _emit (type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }))
  }
}

/**
 * Follow a session's transcript live through Supabase Realtime (the bridge's hub locally). Calls `onLine` for
 * each partial and final line and `onStatus` for the session's status; returns a function that unsubscribes.
 * @param {any} supabase  a client from supabase-js `createClient(realtime.url, realtime.apikey, {accessToken})`
 * @param {string} topic  `realtime.topic` from POST /sessions: `session:{id}`
 * @param {(line: Line) => void} onLine
 * @param {(status: string) => void} [onStatus]
 * @returns {Promise<() => Promise<void>>} resolves once subscribed
 */
export function watchTranscript (supabase, topic, onLine, onStatus = () => {}) {
  const channel = supabase.channel(topic, { config: { broadcast: { self: false } } })
  channel.on('broadcast', { event: 'transcript_partial' }, ({ payload }) => {
    onLine({ speaker: payload.speaker, text: payload.text, final: false })
  })
  channel.on('broadcast', { event: 'transcript_entry' }, ({ payload }) => {
    onLine({ ...payload, final: true })
  })
  channel.on('broadcast', { event: 'session_status' }, ({ payload }) => onStatus(payload.status))
  return new Promise((resolve, reject) => {
    channel.subscribe((status, error) => {
      if (status === 'SUBSCRIBED') resolve(() => supabase.removeChannel(channel))
      else if (status === 'CHANNEL_ERROR' || status === 'TIMED_OUT') reject(error ?? new Error(status))
    })
  })
}

/**
 * The "stream" mode's socket: frames go out as they are captured, each kept until its ack; a dropped socket is
 * opened again, and the server's `ready` says which frames it already stored (the rest are sent again).
 */
class SocketSender {
  constructor (client) {
    this.client = client
    /** @type {{sequence: number, data: Uint8Array}[]} */
    this.unacked = []
    this.nextSequence = 0
    this.ready = false
    this.ending = null
    this.attempt = 0
  }

  url () {
    const base = this.client.baseUrl || globalThis.location.origin
    const query = new URLSearchParams({ // the token goes in the first message, never in a URL
      session_id: this.client.sessionId,
      speaker: this.client.speaker,
      mime_type: `audio/pcm;rate=${WAV_RATE}`
    })
    return `${base.replace(/^http/, 'ws')}/functions/v1/stream?${query}`
  }

  /** Resolves true once the server said `ready`, false when no socket could be opened at all. */
  open () {
    return new Promise((resolve) => {
      const socket = new WebSocket(this.url())
      socket.binaryType = 'arraybuffer'
      this.socket = socket
      socket.onopen = () => socket.send(JSON.stringify({ type: 'auth', token: this.client.token }))
      let opened = false
      const timer = setTimeout(() => { if (!opened) { socket.close(); resolve(false) } }, 5000)
      socket.onmessage = (event) => {
        const message = JSON.parse(event.data)
        if (message.type === 'ready') {
          opened = true
          clearTimeout(timer)
          this._resume(message.next_sequence)
          resolve(true)
        } else if (message.type === 'ack') {
          this.unacked = this.unacked.filter((frame) => frame.sequence > message.sequence_number)
          this.client._emit('sent', { sequence: message.sequence_number, ok: true, status: message.status })
          this.client._emit('state', { recording: this.client.recording, queued: this.client.queued })
        } else if (message.type === 'partial') {
          this.client._emit('partial', { speaker: this.client.speaker, text: message.text, final: false })
        } else if (message.type === 'entry') {
          this.client._emit('final', { ...message.entry, final: true })
        } else if (message.type === 'error') {
          this.error = message
        }
      }
      socket.onclose = (event) => {
        clearTimeout(timer)
        this.ready = false
        if (!opened && this.attempt === 0) return resolve(false)
        this._closed(event.code)
      }
    })
  }

  _resume (next) {
    this.ready = true
    this.attempt = 0
    if (this.unacked.length === 0) this.nextSequence = Math.max(this.nextSequence, next)
    this.unacked = this.unacked.filter((frame) => frame.sequence >= next) // stored before the drop
    for (const frame of this.unacked) this.socket.send(frame.data)
    if (this.ending) this.socket.send(JSON.stringify({ type: 'end' }))
  }

  _closed (code) {
    if (code === 1000) return this.ending?.resolve(true)
    if (this.stopped) return
    const error = this.error ?? { error: `closed ${code}` }
    this.error = null
    const later = code === 4429 || code === 4503 // a limit or an outage: the same frames go again, later
    if (code >= 4000 && code < 5000 && !later) { // refused: the same frames would be refused again
      this.client._emit('rejected', { sequence: this.unacked[0]?.sequence, ok: false, status: code - 4000, ...error })
      if (error.error === 'session_closed') this.client.closed = true
      this.unacked = []
      return this.ending?.resolve(true)
    }
    let delayMs = Math.min(this.client.maxDelayMs, 250 * 2 ** ++this.attempt)
    if (later) delayMs = Math.max(delayMs, 1000 * (error.retry_after ?? 1))
    this.client._emit('retry', { sequence: this.unacked[0]?.sequence, attempt: this.attempt, delayMs, reason: `socket closed ${code}` })
    setTimeout(() => this.open(), delayMs)
  }

  /** One frame of raw PCM; numbered now, sent now if the socket is up, else when it is back. */
  send (data) {
    if (data.byteLength === 0) return
    const frame = { sequence: this.nextSequence++, data }
    this.unacked.push(frame)
    if (this.ready && this.socket.readyState === WebSocket.OPEN) this.socket.send(data)
  }

  /** `end` after the frames: the server stores them, turns what is pending into entries and closes. Resolves
   * with the frames still not acknowledged (0 when every one is stored); after 30 s it stops trying. */
  async end () {
    let resolve
    const done = new Promise((r) => { resolve = r })
    this.ending = { resolve }
    if (this.ready && this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify({ type: 'end' }))
    await Promise.race([done, sleep(30000)])
    this.stopped = true // no reconnect after this
    if (this.socket.readyState === WebSocket.OPEN) this.socket.close()
    return this.unacked.length
  }
}

/** MediaRecorder with a timeslice: each `dataavailable` blob is one chunk. */
class MediaRecorderCapture {
  static open (stream, chunkMs, onChunk) {
    const mimeType = pickMimeType()
    const recorder = new MediaRecorder(stream, mimeType ? { mimeType, audioBitsPerSecond: 32000 } : undefined)
    const type = (recorder.mimeType || mimeType || 'audio/webm').split(';')[0]
    const pending = []
    recorder.addEventListener('dataavailable', (event) => {
      pending.push(event.data.arrayBuffer().then((buffer) => onChunk(new Uint8Array(buffer), type)))
    })
    recorder.start(chunkMs)
    return new MediaRecorderCapture(recorder, pending)
  }

  constructor (recorder, pending) {
    this.recorder = recorder
    this.pending = pending
  }

  async stop () {
    if (this.recorder.state !== 'inactive') {
      const stopped = new Promise((resolve) => this.recorder.addEventListener('stop', resolve, { once: true }))
      this.recorder.stop() // emits the last `dataavailable`, then `stop`
      await Promise.race([stopped, sleep(3000)]) // a track that ended early may never let it stop
    }
    await Promise.all(this.pending)
  }
}

/** An AudioWorklet taking raw PCM; every `chunkMs` the samples, resampled to 16 kHz, go to `onChunk`. */
class PcmCapture {
  static async open (stream, chunkMs, onChunk) {
    const context = new AudioContext()
    await context.audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url))
    const source = context.createMediaStreamSource(stream)
    const node = new AudioWorkletNode(context, 'pcm-capture')
    const capture = new PcmCapture(context, source, node, chunkMs, onChunk)
    node.port.onmessage = (event) => capture._take(event.data)
    source.connect(node)
    return capture
  }

  constructor (context, source, node, chunkMs, onChunk) {
    Object.assign(this, { context, source, node, onChunk })
    this.perChunk = Math.round(context.sampleRate * chunkMs / 1000)
    /** @type {Float32Array[]} */
    this.frames = []
    this.count = 0
  }

  _take (frame) {
    this.frames.push(frame)
    this.count += frame.length
    if (this.count >= this.perChunk) this._flush()
  }

  _flush () {
    if (this.count === 0) return
    const samples = new Float32Array(this.count)
    let at = 0
    for (const frame of this.frames) { samples.set(frame, at); at += frame.length }
    this.frames = []
    this.count = 0
    this.onChunk(resample(samples, this.context.sampleRate, WAV_RATE))
  }

  async stop () {
    this.source.disconnect()
    const last = new Promise((resolve) => {
      this.node.port.onmessage = (event) => {
        if (event.data instanceof Float32Array) return this._take(event.data)
        this._take(event.data.last)
        resolve()
      }
    })
    this.node.port.postMessage('flush')
    await Promise.race([last, sleep(500)])
    this.node.port.onmessage = null
    this._flush()
    await this.context.close()
  }
}

/** Peak level of the microphone over the last 1.5 s, ten times a second, and what it means for a person. */
class LevelMeter {
  constructor (stream, onLevel) {
    this.context = new AudioContext()
    const analyser = this.context.createAnalyser()
    analyser.fftSize = 2048
    this.context.createMediaStreamSource(stream).connect(analyser)
    const samples = new Float32Array(analyser.fftSize)
    const peaks = []
    this.timer = setInterval(() => {
      analyser.getFloatTimeDomainData(samples)
      let peak = 0
      for (const value of samples) peak = Math.max(peak, Math.abs(value))
      peaks.push(peak)
      if (peaks.length > 15) peaks.shift()
      const loudest = Math.max(...peaks)
      const peakDb = loudest > 0 ? 20 * Math.log10(loudest) : -Infinity
      onLevel({ peakDb, state: levelState(peakDb) })
    }, 100)
  }

  stop () {
    clearInterval(this.timer)
    this.context.close()
  }
}

/**
 * @param {number} peakDb  the loudest sample of the last moments, in dBFS
 * @returns {LevelState}
 */
export function levelState (peakDb) {
  if (!(peakDb > -90)) return 'silent'
  if (peakDb < QUIET_DBFS) return 'quiet'
  if (peakDb >= CLIP_DBFS) return 'clipping'
  return 'ok'
}

/** Linear interpolation to `to` Hz (a microphone runs at 44.1 or 48 kHz; the bridge wants 16 kHz). */
export function resample (samples, from, to) {
  if (from === to) return samples
  const out = new Float32Array(Math.floor(samples.length * to / from))
  const step = from / to
  for (let i = 0; i < out.length; i++) {
    const at = i * step
    const left = Math.floor(at)
    const right = Math.min(left + 1, samples.length - 1)
    out[i] = samples[left] + (samples[right] - samples[left]) * (at - left)
  }
  return out
}

/** 16-bit mono PCM WAV bytes: the header, then `pcm16(samples)`. */
export function encodeWav (samples, rate) {
  const data = pcm16(samples)
  const bytes = new Uint8Array(44 + data.length)
  const view = new DataView(bytes.buffer)
  const text = (at, value) => { for (let i = 0; i < value.length; i++) view.setUint8(at + i, value.charCodeAt(i)) }
  text(0, 'RIFF'); view.setUint32(4, 36 + data.length, true); text(8, 'WAVE')
  text(12, 'fmt '); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true)
  view.setUint32(24, rate, true); view.setUint32(28, rate * 2, true); view.setUint16(32, 2, true)
  view.setUint16(34, 16, true); text(36, 'data'); view.setUint32(40, data.length, true)
  bytes.set(data, 44)
  return bytes
}

/** Raw s16le samples (what the stream mode sends, and a WAV's data). */
export function pcm16 (samples) {
  const view = new DataView(new ArrayBuffer(samples.length * 2))
  for (let i = 0; i < samples.length; i++) {
    const value = Math.max(-1, Math.min(1, samples[i]))
    view.setInt16(i * 2, value < 0 ? value * 0x8000 : value * 0x7fff, true)
  }
  return new Uint8Array(view.buffer)
}

/** Base64 of bytes, in slices (a spread of a whole chunk overflows the call stack). */
export function toBase64 (bytes) {
  let binary = ''
  for (let i = 0; i < bytes.length; i += 0x8000) binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000))
  return btoa(binary)
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))
