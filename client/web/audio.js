// Web Audio helpers: gapless playback of reply PCM16 and decoding a file to 16 kHz mono PCM16.

// Delay before the first frame (and after an underrun). Small on purpose: the server sends the first
// 200 ms of a reply at once and stays ~200 ms ahead after that, which already absorbs network jitter.
const START_CUSHION_S = 0.03;

// Plays PCM16 mono frames back to back. Each frame becomes an AudioBufferSourceNode scheduled to
// start exactly where the previous one ends, so there are no clicks between frames.
export class PcmPlayer {
  constructor(ctx) {
    this.ctx = ctx;
    this.rate = 16000;
    this.responseId = null;
    this.next = 0; // context time at which the next frame starts
    this.sources = new Set();
    this.dropping = false; // after a flush: ignore the rest of that reply's frames
  }

  // response.audio.started: the frames that follow belong to this reply, at this rate.
  begin(responseId, sampleRate) {
    this.responseId = responseId;
    this.rate = sampleRate || 16000;
    this.dropping = false;
  }

  play(arrayBuffer) {
    if (this.dropping || arrayBuffer.byteLength < 2) return;
    // Int16Array uses the platform byte order; every browser platform is little-endian like the wire.
    const pcm = new Int16Array(arrayBuffer, 0, arrayBuffer.byteLength >> 1);
    const buffer = this.ctx.createBuffer(1, pcm.length, this.rate); // Web Audio resamples on playback
    const ch = buffer.getChannelData(0);
    for (let i = 0; i < pcm.length; i++) ch[i] = pcm[i] / 32768;
    const src = this.ctx.createBufferSource();
    src.buffer = buffer;
    src.connect(this.ctx.destination);
    const now = this.ctx.currentTime;
    if (this.next < now + 0.01) this.next = now + START_CUSHION_S; // first frame, or we ran dry
    src.start(this.next);
    this.next += buffer.duration;
    this.sources.add(src);
    src.onended = () => this.sources.delete(src);
  }

  // Barge-in: silence everything scheduled but not yet played, at once.
  flush() {
    for (const src of this.sources) {
      try {
        src.stop();
      } catch {
        /* already stopped */
      }
    }
    this.sources.clear();
    this.next = 0;
    this.dropping = true;
  }

  // Seconds of scheduled audio not yet played.
  get pendingSeconds() {
    return Math.max(0, this.next - this.ctx.currentTime);
  }
}

// Decodes a WAV/MP3/... file (ArrayBuffer) to 16 kHz mono PCM16. decodeAudioData resamples to its
// context's rate, so an OfflineAudioContext at 16 kHz does the resampling; channels are averaged.
export async function decodeTo16kPcm(fileBytes) {
  const ctx = new OfflineAudioContext(1, 1, 16000);
  const audio = await ctx.decodeAudioData(fileBytes);
  const n = audio.length;
  const mono = new Float32Array(n);
  for (let c = 0; c < audio.numberOfChannels; c++) {
    const data = audio.getChannelData(c);
    for (let i = 0; i < n; i++) mono[i] += data[i] / audio.numberOfChannels;
  }
  return floatToPcm16(mono);
}

export function floatToPcm16(samples) {
  const out = new Int16Array(samples.length);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    out[i] = s < 0 ? s * 0x8000 : s * 0x7fff;
  }
  return out;
}
