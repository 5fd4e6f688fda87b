// Types of interview-client.js, the bridge's browser client (a plain ES module served at /interview-client.js).

export type CaptureMode = 'stream' | 'media-recorder' | 'wav'
export type LevelState = 'silent' | 'quiet' | 'ok' | 'clipping'

export interface ClientOptions {
  sessionId: string
  /** a session token (or the tenant key) */
  token: string
  speaker: string
  /** the bridge's origin; default: the page's */
  baseUrl?: string
  /** default: defaultMode(): "stream" where the browser has WebSocket and AudioWorklet */
  mode?: CaptureMode
  /** default 2000 */
  chunkMs?: number
  /** the longest wait between retries; default 8000 */
  maxDelayMs?: number
  fetch?: typeof fetch
  /** how retries wait; default setTimeout */
  sleep?: (ms: number) => Promise<void>
}

export interface Line {
  speaker: string
  text: string
  final: boolean
  /** final lines: the transcript entry's fields */
  id?: string
  start_ms?: number
  end_ms?: number
  first_sequence?: number
}

export interface SentDetail { sequence: number; ok: true; status: 'accepted' | 'duplicate' | 'skipped' | 'queued' }
export interface RejectedDetail { sequence: number; ok: false; status: number; error: string; detail?: string }
export interface RetryDetail { sequence: number; attempt: number; delayMs: number; reason: string }
export interface StateDetail { recording: boolean; queued: number }
export interface LevelDetail { peakDb: number; state: LevelState }

export interface InterviewClientEvents {
  sent: CustomEvent<SentDetail>
  rejected: CustomEvent<RejectedDetail>
  retry: CustomEvent<RetryDetail>
  state: CustomEvent<StateDetail>
  level: CustomEvent<LevelDetail>
  partial: CustomEvent<Line>
  final: CustomEvent<Line>
  session_status: CustomEvent<{ status: string }>
  /** "stream" could not open its socket: start() went on with this HTTPS mode */
  fallback: CustomEvent<{ mode: CaptureMode }>
}

export const WAV_RATE: 16000
export const STREAM_FRAME_MS: 250
/** the HTTPS chunk mode this browser records best: "media-recorder", else "wav" */
export function httpsMode (): CaptureMode
export function pickMimeType (): string | null
export function defaultMode (): CaptureMode
export function levelState (peakDb: number): LevelState
export function resample (samples: Float32Array, from: number, to: number): Float32Array
export function encodeWav (samples: Float32Array, rate: number): Uint8Array
/** raw s16le samples, as the stream mode sends them */
export function pcm16 (samples: Float32Array): Uint8Array
export function toBase64 (bytes: Uint8Array): string

export class InterviewClient extends EventTarget {
  constructor (options: ClientOptions)
  readonly sessionId: string
  readonly speaker: string
  readonly mode: CaptureMode
  readonly recording: boolean
  /** true once the bridge answered 409 session_closed */
  readonly closed: boolean
  /** chunks captured and not yet acknowledged */
  readonly queued: number
  /** the sequence number the next chunk gets */
  readonly nextSequence: number
  /** capture `stream` (default: the microphone), resuming at the bridge's next_sequence for this speaker */
  start (stream?: MediaStream): Promise<void>
  /** stop capturing; resolves once every captured chunk is acknowledged or refused, with the number of
   * streamed frames that could not be stored (0 when all were) */
  stop (): Promise<number>
  drain (): Promise<void>
  resumeAt (): Promise<number>
  /** queue a chunk of your own capture; sent in order with the next sequence number */
  send (data: Uint8Array, mimeType: string): void
  /** follow the session's lines as `partial`, `final` and `session_status` events */
  watch (supabase: unknown, topic: string): Promise<void>
  unwatch (): Promise<void>
  addEventListener<K extends keyof InterviewClientEvents> (
    type: K, listener: (event: InterviewClientEvents[K]) => void, options?: boolean | AddEventListenerOptions
  ): void
}

/** follow a session's topic; resolves to an unsubscribe function once subscribed */
export function watchTranscript (
  supabase: unknown,
  topic: string,
  onLine: (line: Line) => void,
  onStatus?: (status: string) => void
): Promise<() => Promise<void>>
