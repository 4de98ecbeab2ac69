// Hark browser client: wires the page to a WebRTC or WebSocket hark.v1 session.
// Query string (for people and tests):
//   ?transport=webrtc|websocket  ?ec=0 ?ns=0 ?agc=0  ?autostart=1  ?server=ws://host:port  ?token=KEY

import { FileSender } from './file-sender.js';
import { endpointUrl, serverBase, WebRtcTransport, WebSocketTransport } from './transport.js';
import { ConversationView, describeError, isKnownError } from './view.js';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(window.location.search);
const base = serverBase(params);
const token = params.get('token');

const view = new ConversationView({
  log: $('log'),
  finals: $('finals'),
  typed: $('typed'),
  replies: $('reply'),
  partial: $('partial'),
  latency: $('latency'),
  errors: $('errors'),
});

let session = null; // the running transport
let lastSession = null; // kept after it ends, so harkStats() still reports its counters
let mic = null;
let status = 'idle';
let fatalSeen = false;

// ---- settings from the query string -------------------------------------------------------------

const wanted = params.get('transport');
if (wanted === 'webrtc' || wanted === 'websocket') {
  document.querySelector(`input[name=transport][value=${wanted}]`).checked = true;
}
for (const id of ['ec', 'ns', 'agc']) if (params.get(id) === '0') $(id).checked = false;

function transportChoice() {
  return document.querySelector('input[name=transport]:checked').value;
}

function micConstraints() {
  return {
    echoCancellation: $('ec').checked,
    noiseSuppression: $('ns').checked,
    autoGainControl: $('agc').checked,
    channelCount: 1,
  };
}

// ---- status -------------------------------------------------------------------------------------

// #status holds exactly one word (idle, connecting, connected, error, closed); details go beside it.
function setStatus(state, detail = '') {
  status = state;
  $('status').textContent = state;
  $('status').dataset.state = state;
  document.body.dataset.state = state;
  $('status-detail').textContent = detail;
  const live = state === 'connecting' || state === 'connected';
  $('start').textContent = live ? 'Stop' : 'Start';
  $('start').classList.toggle('stop', live);
  $('text-input').disabled = $('text-send').disabled = state !== 'connected';
  for (const input of document.querySelectorAll('#transport-choice input')) input.disabled = live;
  updateInterrupt();
}

function updateInterrupt() {
  $('interrupt').disabled = status !== 'connected' || !view.activeResponseId;
}

// ---- session lifecycle --------------------------------------------------------------------------

async function start() {
  if (session) return;
  view.reset();
  fatalSeen = false;
  const kind = transportChoice();
  setStatus('connecting', 'Asking for the microphone…');
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    return failClient('insecure_context', 'navigator.mediaDevices is unavailable');
  }
  try {
    mic = await navigator.mediaDevices.getUserMedia({ audio: micConstraints() });
  } catch (err) {
    const code = err.name === 'NotFoundError' || err.name === 'OverconstrainedError' ? 'mic_missing' : 'mic_denied';
    return failClient(code, `${err.name}: ${err.message}`);
  }
  if (status !== 'connecting') return stopMic(); // Stop was pressed while the browser asked

  const handlers = {
    onEvent,
    onProgress: (text) => status === 'connecting' && setStatus('connecting', text),
    onClose,
    onTrack: (stream) => {
      const audio = $('remote-audio');
      audio.srcObject = stream;
      // Blocked autoplay (no user gesture, e.g. ?autostart=1): retry on the next click.
      audio.play().catch(() => document.addEventListener('click', () => audio.play().catch(() => {}), { once: true }));
    },
  };
  const path = kind === 'webrtc' ? '/v1/webrtc' : '/v1/stream';
  const Transport = kind === 'webrtc' ? WebRtcTransport : WebSocketTransport;
  session = new Transport(endpointUrl(base, path, token), mic, handlers);
  lastSession = session;
  try {
    await session.start();
  } catch (err) {
    console.error(err);
    view.addError(kind === 'webrtc' ? 'webrtc_failed' : 'connect_failed', err.message || String(err), true);
    fatalSeen = true;
    if (session) session.close();
  }
}

function stop() {
  if (session) session.close(); // onClose does the rest
  else if (status === 'connecting') {
    setStatus('closed');
    stopMic();
  }
}

function failClient(code, message) {
  view.addError(code, message, true);
  setStatus('error', describeError(code));
  stopMic();
}

function stopMic() {
  if (mic) for (const track of mic.getTracks()) track.stop();
  mic = null;
}

function onEvent(event) {
  if (event.type === 'session.created') {
    const e = event.engines || {};
    setStatus('connected', `${transportChoice()} · ASR ${e.asr ?? '?'} · LLM ${e.llm ?? '?'} · TTS ${e.tts ?? '?'}`);
  } else if (event.type === 'error' && event.fatal) {
    fatalSeen = true;
    setStatus('error', describeError(event.code));
  }
  view.handle(event);
  updateInterrupt();
  if (event.type === 'transcript.final' && event.low_confidence) offerTyping();
}

// The server did not catch a spoken turn and asks to repeat or type it: put the text box forward.
function offerTyping() {
  const input = $('text-input');
  $('text-form').classList.add('offered');
  input.placeholder = "Didn't catch that. Type it here, or say it again…";
  if (!input.disabled) input.focus();
}

// How a session ended, in words. A fatal error event, if any, has already said why.
function onClose(info) {
  session = null;
  stopMic();
  $('remote-audio').srcObject = null;
  if (info.byUser) return setStatus('closed');
  if (fatalSeen) return setStatus('error', $('status-detail').textContent);
  const reason = info.reason || '';
  if (info.code === 1000 || info.code === 1001) {
    return setStatus('closed', info.code === 1001 ? 'The server is shutting down.' : reason);
  }
  // The server may say why only in the close frame (slow_consumer, or a refusal before any event).
  let code = status === 'connected' ? 'connection_lost' : 'connect_failed';
  const named = reason.split(':')[0].trim();
  if (isKnownError(named)) code = named;
  else if (info.code === 1013) code = 'server_busy';
  view.addError(code, reason || `close code ${info.code}`, true);
  setStatus('error', describeError(code));
}

// ---- controls -----------------------------------------------------------------------------------

$('start').addEventListener('click', () => (session || status === 'connecting' ? stop() : start()));

$('interrupt').addEventListener('click', () => {
  if (!session) return;
  const id = view.activeResponseId;
  session.send(id ? { type: 'response.cancel', response_id: id } : { type: 'response.cancel' });
  session.flushPlayback(); // silence now; the server's response.done follows
});

$('text-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const text = $('text-input').value.trim();
  if (!session || !text) return;
  session.send({ type: 'input.text', text: text.slice(0, 8000) });
  view.addTyped(text);
  $('text-input').value = '';
  $('text-form').classList.remove('offered');
  $('text-input').placeholder = 'Say something…';
});

// Mic processing toggles apply to the running track where the browser allows it, else next Start.
for (const id of ['ec', 'ns', 'agc']) {
  $(id).addEventListener('change', () => {
    const track = mic && mic.getAudioTracks()[0];
    if (track) track.applyConstraints(micConstraints()).catch(() => {});
  });
}

const fileSender = new FileSender(
  {
    input: $('file-input'),
    button: $('file-send'),
    status: $('file-status'),
    progress: $('file-progress'),
    log: $('file-log'),
    finals: $('file-finals'),
    typed: null,
    replies: $('file-reply'),
    partial: $('file-partial'),
    latency: $('file-latency'),
    errors: $('file-errors'),
  },
  () => endpointUrl(base, '/v1/stream', token),
);

// ---- test hooks ---------------------------------------------------------------------------------

// Counters and what the page showed. packetsReceived: WebRTC inbound-rtp audio packets, or binary
// reply frames over the WebSocket; audioBytes likewise (RTP payload bytes, or PCM bytes).
window.harkStats = async () => {
  const counters = lastSession
    ? await lastSession.stats()
    : { packetsReceived: 0, audioBytes: 0, framesSent: 0, bytesSent: 0 };
  return {
    transport: lastSession ? lastSession.kind : transportChoice(),
    status,
    ...counters,
    ...view.snapshot(),
    file: await fileSender.stats(),
  };
};
window.hark = { start, stop, view };

setStatus('idle', 'Press Start and speak.');
if (params.get('autostart') === '1') start();
