// The two ways this page carries a hark.v1 session. Both have the same shape:
//   new X(url, mic, handlers); await start(); send(event); close(); await stats()
// and report through handlers:
//   onEvent(event)        every hark.v1 server event (session.created, transcript.*, error, ...)
//   onProgress(text)      what it is waiting for while connecting, for the status line
//   onClose(info)         once, when the session is over: {code, reason, byUser}
//   onTrack(stream)       WebRTC only: the reply audio as a remote MediaStream

import { PcmPlayer } from './audio.js';

const FRAME_SAMPLES = 1600; // 100 ms at 16 kHz = 3200 bytes, the protocol's recommended frame
const ICE_GATHER_TIMEOUT_MS = 3000; // loopback gathers in ~120 ms; never wait forever
// No STUN/TURN unless the server is configured with some (GET /v1/webrtc/config): on loopback and
// LAN the server is reached directly.
export const RTC_CONFIG = { iceServers: [] };

// The server's ICE servers (its `webrtc_ice_servers` setting), fetched before the offer is made.
async function rtcConfig(wsUrl) {
  try {
    const url = new URL(wsUrl.replace(/^ws(s?):/, 'http$1:'));
    url.pathname = '/v1/webrtc/config';
    url.search = '';
    const resp = await fetch(url.href, { cache: 'no-store' });
    if (!resp.ok) return RTC_CONFIG;
    const body = await resp.json();
    return Array.isArray(body.ice_servers) ? { iceServers: body.ice_servers } : RTC_CONFIG;
  } catch {
    return RTC_CONFIG; // an older server without the route: direct connection
  }
}

// ws(s)://host:port of the Hark server: ?server=..., else the host that served this page.
export function serverBase(params, loc = window.location) {
  const s = params.get('server');
  if (s) return s.replace(/^http(s?):/, 'ws$1:').replace(/\/+$/, '');
  return (loc.protocol === 'https:' ? 'wss://' : 'ws://') + loc.host;
}

// Browsers cannot set an Authorization header on a WebSocket, so the key rides in ?token=.
export function endpointUrl(base, path, token) {
  const url = new URL(base + path);
  if (token) url.searchParams.set('token', token);
  return url.href;
}

function parseJson(text) {
  try {
    const event = JSON.parse(text);
    return event && typeof event.type === 'string' ? event : null;
  } catch {
    return null;
  }
}

// What every transport holds: its kind, the server URL, the mic stream (or null) and the page's
// handlers (onEvent, onProgress, onClose, ...); `ended` once it has closed.
class Transport {
  constructor(kind, url, mic, handlers) {
    this.kind = kind;
    this.url = url;
    this.mic = mic;
    this.h = handlers;
    this.ended = false;
  }
}

// WebSocket to /v1/stream: mic PCM16 out as binary frames, reply PCM16 in as binary frames.
// With mic = null nothing is captured: the caller feeds audio with sendAudio() (the file panel).
export class WebSocketTransport extends Transport {
  constructor(url, mic, handlers) {
    super('websocket', url, mic, handlers);
    this.ready = false; // session.created seen: audio may flow
    this.counters = { packetsReceived: 0, audioBytes: 0, framesSent: 0, bytesSent: 0 };
  }

  async start() {
    this.ctx = new AudioContext({ latencyHint: 'interactive' });
    // Autoplay policy: a context made without a user gesture starts suspended; the next click wakes it.
    if (this.ctx.state === 'suspended') {
      this.ctx.resume().catch(() => {});
      document.addEventListener('click', () => this.ctx.resume().catch(() => {}), { once: true });
    }
    this.player = new PcmPlayer(this.ctx);
    if (this.mic) await this.startCapture();
    if (this.ended) return;
    this.h.onProgress('Connecting to the server…');
    const ws = new WebSocket(this.url);
    ws.binaryType = 'arraybuffer';
    ws.onmessage = (e) => (typeof e.data === 'string' ? this.onText(e.data) : this.onAudio(e.data));
    ws.onclose = (e) => this.end({ code: e.code, reason: e.reason, byUser: false });
    this.ws = ws;
  }

  // mic -> worklet (16 kHz PCM16 frames) -> muted gain -> destination. The path to the destination
  // makes the graph pull the worklet; the zero gain keeps the mic out of the speakers.
  async startCapture() {
    await this.ctx.audioWorklet.addModule(new URL('./pcm-worklet.js', import.meta.url));
    this.source = this.ctx.createMediaStreamSource(this.mic);
    this.node = new AudioWorkletNode(this.ctx, 'pcm16-capture', {
      channelCount: 1,
      channelCountMode: 'explicit', // downmix to mono before the worklet sees it
      processorOptions: { targetRate: 16000, frameSamples: FRAME_SAMPLES },
    });
    // Frames captured before session.created are dropped: nobody has spoken yet.
    this.node.port.onmessage = (e) => this.sendAudio(e.data);
    const mute = this.ctx.createGain();
    mute.gain.value = 0;
    this.source.connect(this.node).connect(mute).connect(this.ctx.destination);
  }

  onText(text) {
    const event = parseJson(text);
    if (!event) return;
    if (event.type === 'session.created') this.ready = true;
    if (event.type === 'response.audio.started') this.player.begin(event.response_id, event.sample_rate);
    // Barge-in: drop the cancelled reply's unplayed audio. Only if it is the reply we are playing:
    // a newer reply cancelled before its audio began must not cut the tail of the previous one.
    if (event.type === 'response.done' && event.status === 'cancelled' && event.response_id === this.player.responseId) {
      this.player.flush();
    }
    this.h.onEvent(event);
  }

  onAudio(data) {
    this.counters.packetsReceived += 1;
    this.counters.audioBytes += data.byteLength;
    this.player.play(data);
  }

  sendAudio(buffer) {
    if (!this.ready || this.ended || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(buffer);
    this.counters.framesSent += 1;
    this.counters.bytesSent += buffer.byteLength;
    return true;
  }

  send(event) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(event));
  }

  // Interrupt button: silence our side now instead of waiting for the server's response.done.
  flushPlayback() {
    if (this.player) this.player.flush();
  }

  close() {
    this.end({ code: 1000, reason: 'closed by user', byUser: true });
  }

  end(info) {
    if (this.ended) return;
    this.ended = true;
    if (this.ws) {
      this.ws.onmessage = this.ws.onclose = null;
      if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    }
    if (this.node) this.node.port.onmessage = null;
    if (this.source) this.source.disconnect();
    // Let reply audio already received finish playing when the server ended the session
    // (the file panel's session.close); stop at once when the user pressed Stop.
    const tail = info.byUser || !this.player ? 0 : this.player.pendingSeconds;
    if (this.ctx) setTimeout(() => this.ctx.close().catch(() => {}), tail * 1000 + 50);
    this.h.onClose(info);
  }

  async stats() {
    return { ...this.counters };
  }
}

// WebRTC: signalling WebSocket to /v1/webrtc (offer/answer, plus server errors), the mic as an
// Opus track, reply speech as a remote track, hark.v1 JSON events both ways on data channel "hark".
export class WebRtcTransport extends Transport {
  constructor(url, mic, handlers) {
    super('webrtc', url, mic, handlers);
    this.queue = []; // client events sent before the data channel opened
    this.lastStats = { packetsReceived: 0, audioBytes: 0, framesSent: 0, bytesSent: 0 };
  }

  async start() {
    const pc = new RTCPeerConnection(await rtcConfig(this.url));
    this.pc = pc;
    // addTrack gives a send-receive transceiver; the server's reply track rides back on it.
    for (const track of this.mic.getAudioTracks()) pc.addTrack(track, this.mic);
    pc.ontrack = (e) => this.h.onTrack(e.streams[0] || new MediaStream([e.track]));
    pc.onconnectionstatechange = () => {
      if (pc.connectionState === 'failed') {
        this.h.onEvent({ type: 'error', code: 'webrtc_failed', message: 'ICE/DTLS connection failed', fatal: true });
        this.end({ code: 4000, reason: 'webrtc connection failed', byUser: false });
      }
    };

    const dc = pc.createDataChannel('hark', { ordered: true });
    this.dc = dc;
    dc.onopen = () => {
      for (const event of this.queue.splice(0)) dc.send(JSON.stringify(event));
    };
    dc.onmessage = (e) => {
      if (typeof e.data !== 'string') return; // no binary in WebRTC mode: audio is on the track
      const event = parseJson(e.data);
      if (event) this.h.onEvent(event);
    };
    dc.onclose = () => this.end({ code: 1000, reason: 'data channel closed', byUser: false });

    // Open signalling while the offer is prepared: both take a moment.
    const ws = new WebSocket(this.url);
    this.ws = ws;
    const opened = new Promise((resolve) => {
      ws.onopen = resolve;
    });
    ws.onmessage = (e) => this.onSignal(e.data);
    ws.onclose = (e) => this.end({ code: e.code, reason: e.reason, byUser: false });

    this.h.onProgress('Preparing the connection…');
    await pc.setLocalDescription(await pc.createOffer());
    await waitIceGathering(pc, ICE_GATHER_TIMEOUT_MS); // no trickle ICE: all candidates in the offer
    this.h.onProgress('Connecting to the server…');
    await opened; // if it never opens, onclose has ended the session and this start() just idles
    if (this.ended) return;
    ws.send(JSON.stringify({ type: 'webrtc.offer', sdp: pc.localDescription.sdp }));
    this.h.onProgress('Waiting for the server’s answer…');
  }

  async onSignal(text) {
    if (typeof text !== 'string') return;
    const event = parseJson(text);
    if (!event) return;
    if (event.type === 'webrtc.answer') {
      try {
        await this.pc.setRemoteDescription({ type: 'answer', sdp: event.sdp });
        this.h.onProgress('Connecting audio…');
      } catch (err) {
        this.h.onEvent({ type: 'error', code: 'webrtc_failed', message: `bad answer: ${err.message}`, fatal: true });
        this.end({ code: 4000, reason: 'bad answer', byUser: false });
      }
      return;
    }
    // Anything else on signalling (error, or hark.v1 events if a server sends them here) is an event.
    this.h.onEvent(event);
  }

  send(event) {
    if (this.dc && this.dc.readyState === 'open') this.dc.send(JSON.stringify(event));
    else if (!this.ended) this.queue.push(event);
  }

  flushPlayback() {
    /* nothing is buffered here: the server stops the track */
  }

  close() {
    this.end({ code: 1000, reason: 'closed by user', byUser: true });
  }

  end(info) {
    if (this.ended) return;
    this.ended = true;
    if (this.dc) this.dc.onclose = this.dc.onmessage = null;
    if (this.ws) {
      this.ws.onclose = this.ws.onmessage = null;
      if (this.ws.readyState <= WebSocket.OPEN) this.ws.close(1000);
    }
    const pc = this.pc;
    if (pc) {
      pc.onconnectionstatechange = null;
      // Keep the last counters for harkStats(): a closed connection has none.
      this.readStats()
        .catch(() => {})
        .finally(() => pc.close());
    }
    this.h.onClose(info);
  }

  async readStats() {
    const report = await this.pc.getStats();
    const s = { packetsReceived: 0, audioBytes: 0, framesSent: 0, bytesSent: 0 };
    report.forEach((r) => {
      const audio = r.kind === 'audio' || r.mediaType === 'audio';
      if (r.type === 'inbound-rtp' && audio) {
        s.packetsReceived += r.packetsReceived || 0;
        s.audioBytes += r.bytesReceived || 0;
      } else if (r.type === 'outbound-rtp' && audio) {
        s.framesSent += r.packetsSent || 0;
        s.bytesSent += r.bytesSent || 0;
      }
    });
    this.lastStats = s;
    return s;
  }

  async stats() {
    if (this.ended || !this.pc) return { ...this.lastStats };
    return this.readStats();
  }
}

function waitIceGathering(pc, timeoutMs) {
  if (pc.iceGatheringState === 'complete') return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      if (pc.iceGatheringState !== 'complete') return;
      pc.removeEventListener('icegatheringstatechange', done);
      resolve();
    };
    pc.addEventListener('icegatheringstatechange', done);
    setTimeout(resolve, timeoutMs); // send what we have rather than hang
  });
}
