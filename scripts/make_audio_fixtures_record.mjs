// Records a WAV through Chromium's fake microphone with MediaRecorder and a timeslice, and writes every
// blob as its own file: real browser chunks are the ground truth for continuation decoding.
// Usage: node make_audio_fixtures_record.mjs <input.wav> <seconds> <timeslice_ms> <mime> <out_prefix> <ext>
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const require = createRequire(resolve(dirname(fileURLToPath(import.meta.url)), '..', 'package.json'));
const { chromium } = require('playwright-core');

const [wav, seconds, timeslice, mime, outPrefix, ext] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: [
    '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
    `--use-file-for-fake-audio-capture=${wav}`,
  ],
});
try {
  const page = await browser.newPage();
  // getUserMedia needs a secure context: serve a blank page as http://localhost.
  await page.route('http://localhost/rec', (r) => r.fulfill({ contentType: 'text/html', body: '<html></html>' }));
  await page.goto('http://localhost/rec');
  const out = await page.evaluate(async ({ seconds, timeslice, mime }) => {
    if (!MediaRecorder.isTypeSupported(mime)) return { supported: false, blobs: [] };
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false },
    });
    const rec = new MediaRecorder(stream, { mimeType: mime, audioBitsPerSecond: 32000 });
    const blobs = [];
    rec.ondataavailable = (e) => blobs.push(e.data);
    const stopped = new Promise((r) => { rec.onstop = r; });
    rec.start(Number(timeslice));
    await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
    rec.stop();
    await stopped;
    const encoded = [];
    for (const blob of blobs) {
      const bytes = new Uint8Array(await blob.arrayBuffer());
      let s = '';
      for (let i = 0; i < bytes.length; i++) s += String.fromCharCode(bytes[i]);
      encoded.push(btoa(s));
    }
    return { supported: true, type: rec.mimeType, blobs: encoded };
  }, { seconds, timeslice, mime });
  if (!out.supported) {
    console.error(`chromium MediaRecorder does not support ${mime}; nothing written`);
  } else {
    out.blobs.forEach((b64, i) => {
      const name = `${outPrefix}${String(i).padStart(3, '0')}.${ext}`;
      writeFileSync(name, Buffer.from(b64, 'base64'));
    });
    console.error(`${out.type}: ${out.blobs.length} blobs -> ${outPrefix}*.${ext}`);
  }
} finally {
  await browser.close();
}
