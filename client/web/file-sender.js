// "Send a file" debugging panel: decode a WAV/MP3 in the browser, resample to 16 kHz mono, and
// stream it to /v1/stream on its own WebSocket session in 100 ms frames at real-time pace, then
// 1 s of silence (so the VAD sees the end of speech) and session.close. The transcript and reply
// are shown with the same view as the live conversation; the reply audio plays too.

import { decodeTo16kPcm } from './audio.js';
import { WebSocketTransport } from './transport.js';
import { ConversationView } from './view.js';

const RATE = 16000;
const FRAME = 1600; // 100 ms
const TAIL_SILENCE = RATE; // 1 s

export class FileSender {
  // els: {input, button, status, progress} plus the ConversationView elements; url(): /v1/stream URL
  constructor(els, url) {
    this.els = els;
    this.url = url;
    this.view = new ConversationView(els);
    this.transport = null;
    this.state = 'idle';
    els.button.addEventListener('click', () => (this.transport ? this.stop() : this.send()));
  }

  setState(state, detail) {
    this.state = state;
    this.els.status.textContent = detail ? `${state}: ${detail}` : state;
    this.els.status.dataset.state = state;
    const busy = !['idle', 'done', 'error', 'stopped'].includes(state);
    this.els.button.textContent = busy ? 'Stop sending' : 'Send file';
  }

  async send() {
    const file = this.els.input.files[0];
    if (!file) {
      this.setState('idle', 'choose a file first');
      return;
    }
    this.view.reset();
    this.setState('decoding', file.name);
    let pcm;
    try {
      pcm = await decodeTo16kPcm(await file.arrayBuffer());
    } catch (err) {
      this.view.addError('decode_failed', err.message || String(err), false);
      this.setState('error', 'could not decode the file');
      return;
    }
    // Whole frames only (the last one padded with zeros), then the trailing second of silence.
    const total = Math.ceil((pcm.length + TAIL_SILENCE) / FRAME) * FRAME;
    const audio = new Int16Array(total);
    audio.set(pcm);
    this.stream(audio, pcm.length / RATE);
  }

  stream(audio, seconds) {
    let ready;
    const created = new Promise((resolve) => (ready = resolve));
    const t = new WebSocketTransport(this.url(), null, {
      onEvent: (event) => {
        if (event.type === 'session.created') ready(true);
        this.view.handle(event);
      },
      onProgress: (text) => this.setState('connecting', text),
      onClose: (info) => {
        ready(false);
        this.transport = null;
        if (info.byUser) this.setState('stopped');
        else if (info.code === 1000 && this.sentAll) this.setState('done', `sent ${seconds.toFixed(1)} s of audio`);
        else this.setState('error', `connection closed (${info.code}${info.reason ? ` ${info.reason}` : ''})`);
      },
      onTrack: () => {},
    });
    this.transport = t;
    this.lastTransport = t; // its counters outlive the session, for stats()
    this.sentAll = false;
    this.setState('connecting');
    t.start()
      .then(() => created)
      .then((ok) => ok && this.pace(t, audio, seconds))
      .catch((err) => {
        this.view.addError('connect_failed', err.message || String(err), true);
        t.close();
        this.setState('error', 'could not start');
      });
  }

  // Real time from a wall clock, not per-timer increments: a throttled background tab catches up in
  // a burst, which the server's 3 s audio bucket absorbs.
  pace(t, audio, seconds) {
    const frames = audio.length / FRAME;
    const start = performance.now();
    let sent = 0;
    this.setState('streaming', `${seconds.toFixed(1)} s of audio + 1 s of silence`);
    const tick = () => {
      if (this.transport !== t) return; // stopped
      const due = Math.min(frames, Math.floor((performance.now() - start) / 100) + 1);
      for (; sent < due; sent++) {
        // slice() copies: each message gets its own 3200-byte buffer
        t.sendAudio(audio.slice(sent * FRAME, (sent + 1) * FRAME).buffer);
      }
      this.els.progress.value = sent / frames;
      if (sent < frames) {
        setTimeout(tick, 20);
        return;
      }
      this.sentAll = true;
      t.send({ type: 'session.close' }); // the server finishes the turn and reply, then closes 1000
      this.setState('waiting', 'all audio sent; waiting for the reply');
    };
    tick();
  }

  stop() {
    if (this.transport) this.transport.close();
  }

  async stats() {
    const t = this.lastTransport;
    const counters = t ? await t.stats() : { packetsReceived: 0, audioBytes: 0, framesSent: 0, bytesSent: 0 };
    return { status: this.state, ...counters, ...this.view.snapshot() };
  }
}
