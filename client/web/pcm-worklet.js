// AudioWorkletProcessor "pcm16-capture": microphone at the AudioContext rate -> 16 kHz mono PCM16,
// posted to the page as 100 ms frames (an ArrayBuffer of 3200 bytes, transferred, not copied).
// It runs on the audio thread, so it keeps its buffers and allocates only once per frame.

// Low-pass FIR (windowed sinc) then linear interpolation at the output instants. The filter keeps
// the 8-16 kHz band of a 48 kHz microphone from aliasing into the speech band the ASR listens to.
class Downsampler {
  constructor(inRate, outRate) {
    this.step = inRate / outRate; // input samples per output sample (need not be an integer: 44.1k)
    const fc = (0.45 * Math.min(inRate, outRate)) / inRate; // cutoff, cycles per input sample
    const half = Math.max(4, Math.ceil(4 * Math.max(this.step, 1)));
    const n = 2 * half + 1;
    this.taps = new Float32Array(n);
    let sum = 0;
    for (let k = 0; k < n; k++) {
      const x = k - half;
      const sinc = x === 0 ? 2 * fc : Math.sin(2 * Math.PI * fc * x) / (Math.PI * x);
      const hamming = 0.54 - 0.46 * Math.cos((2 * Math.PI * k) / (n - 1));
      this.taps[k] = sinc * hamming;
      sum += this.taps[k];
    }
    for (let k = 0; k < n; k++) this.taps[k] /= sum; // unity gain at DC
    this.buf = new Float32Array(4096);
    this.len = 0; // samples held in buf
    this.pos = 0; // next output instant, in input samples from buf[0]
  }

  fir(i) {
    const t = this.taps;
    const b = this.buf;
    let acc = 0;
    for (let k = 0; k < t.length; k++) acc += t[k] * b[i + k];
    return acc;
  }

  // Appends `input`, writes as many output samples as it can into `out`, returns their count.
  process(input, out) {
    if (this.len + input.length > this.buf.length) {
      const bigger = new Float32Array(2 * (this.len + input.length));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
    this.buf.set(input, this.len);
    this.len += input.length;
    const n = this.taps.length;
    let count = 0;
    for (;;) {
      const i = Math.floor(this.pos);
      if (i + n + 1 > this.len || count >= out.length) break;
      const frac = this.pos - i;
      const a = this.fir(i);
      out[count++] = frac ? a + (this.fir(i + 1) - a) * frac : a;
      this.pos += this.step;
    }
    const used = Math.floor(this.pos); // drop what no future output needs
    this.buf.copyWithin(0, used, this.len);
    this.len -= used;
    this.pos -= used;
    return count;
  }
}

class Pcm16Capture extends AudioWorkletProcessor {
  constructor(options) {
    super();
    const opts = (options && options.processorOptions) || {};
    this.outRate = opts.targetRate || 16000;
    this.frameSamples = opts.frameSamples || this.outRate / 10; // 100 ms
    this.ds = new Downsampler(sampleRate, this.outRate); // sampleRate: the AudioContext's, a global here
    this.scratch = new Float32Array(1024);
    this.frame = new Int16Array(this.frameSamples);
    this.fill = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    // No input yet (mic not started) or the source ended: keep the node alive, post nothing.
    if (!channels || channels.length === 0) return true;
    const n = this.ds.process(channels[0], this.scratch); // node is mono (channelCount 1, explicit)
    for (let j = 0; j < n; j++) {
      const s = Math.max(-1, Math.min(1, this.scratch[j]));
      this.frame[this.fill++] = s < 0 ? s * 0x8000 : s * 0x7fff;
      if (this.fill === this.frameSamples) {
        this.port.postMessage(this.frame.buffer, [this.frame.buffer]);
        this.frame = new Int16Array(this.frameSamples);
        this.fill = 0;
      }
    }
    return true;
  }
}

registerProcessor('pcm16-capture', Pcm16Capture);
