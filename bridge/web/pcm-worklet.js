// The AudioWorklet of interview-client.js's "wav" mode: hands the microphone's raw samples (channel 0) to the
// page in blocks of 4096, instead of one message per 128-sample render quantum.
class PcmCapture extends AudioWorkletProcessor {
  constructor () {
    super()
    this.block = new Float32Array(4096)
    this.filled = 0
    this.port.onmessage = () => { // "flush": the page stops; hand over what the block holds
      this.port.postMessage({ last: this.block.slice(0, this.filled) })
      this.filled = 0
    }
  }

  process (inputs) {
    const samples = inputs[0]?.[0]
    if (samples) {
      let at = 0
      while (at < samples.length) {
        const take = Math.min(samples.length - at, this.block.length - this.filled)
        this.block.set(samples.subarray(at, at + take), this.filled)
        this.filled += take
        at += take
        if (this.filled === this.block.length) {
          this.port.postMessage(this.block)
          this.block = new Float32Array(4096)
          this.filled = 0
        }
      }
    }
    return true
  }
}

registerProcessor('pcm-capture', PcmCapture)
