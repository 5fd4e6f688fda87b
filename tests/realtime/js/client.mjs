// A supabase-js Realtime client for the tests: subscribes to one topic and prints JSON lines on stdout.
// node client.mjs --url=http://127.0.0.1:PORT --apikey=KEY --topic=session:a [--token=JWT] [--vsn=1.0.0]
//                 [--self=1] [--ack=1] [--send=event] [--send-payload=JSON]
import { createClient } from '@supabase/supabase-js'
import WebSocket from 'ws'

const args = {}
for (const arg of process.argv.slice(2)) {
  const match = /^--([^=]+)=(.*)$/s.exec(arg)
  if (match) args[match[1]] = match[2]
}
const out = (line) => process.stdout.write(JSON.stringify(line) + '\n')

// Node 20 has no global WebSocket: supabase-js needs the `ws` package as its transport (browsers do not).
const realtime = { transport: WebSocket, heartbeatIntervalMs: Number(args.heartbeat ?? 25000) }
if (args.vsn) realtime.vsn = args.vsn
const token = args.token || args.apikey
const supabase = createClient(args.url, args.apikey, {
  realtime,
  accessToken: async () => token,
})
out({ kind: 'ready', vsn: supabase.realtime.vsn ?? null })

const channel = supabase.channel(args.topic, {
  config: { broadcast: { self: args.self === '1', ack: args.ack === '1' } },
})
channel.on('broadcast', { event: '*' }, (message) => {
  out({ kind: 'broadcast', event: message.event, payload: message.payload })
})
channel.subscribe(async (status, error) => {
  out({ kind: 'status', status, error: error ? String(error.message ?? error) : null })
  if (status === 'SUBSCRIBED' && args.send) {
    const payload = JSON.parse(args['send-payload'] ?? '{}')
    const result = await channel.send({ type: 'broadcast', event: args.send, payload })
    out({ kind: 'sent', result })
  }
})

const stop = async () => {
  await supabase.removeAllChannels()
  process.exit(0)
}
process.on('SIGTERM', stop)
process.on('SIGINT', stop)
