// Renders hark.v1 server events into the page, and keeps what it showed as plain data for tests
// (window.harkStats). One instance per session view: the main conversation and the file panel.

// A sentence a person can act on for each error code; the server's own message follows it.
const FRIENDLY = {
  unauthorized: 'The server needs a valid API key. Open this page with ?token=YOUR_KEY in the address.',
  origin_not_allowed: 'The server does not accept connections from this page’s address (its origin is not on the allowed list).',
  server_busy: 'The server is busy: every conversation slot is in use. Try again in a moment.',
  server_not_ready: 'The server is still loading its speech models. Try again in a few seconds.',
  audio_flood: 'Audio arrived faster than real time, so some of it was dropped.',
  llm_unavailable: 'The language model could not answer, so this reply failed. Your words are kept and will be sent with your next turn.',
  response_failed: 'The reply could not be produced: a speech engine failed.',
  internal_error: 'Something went wrong inside the server.',
  invalid_json: 'The server could not read a message from this page.',
  invalid_event: 'The server could not read a message from this page.',
  unknown_event: 'The server did not recognise a message from this page (is it an older version?).',
  invalid_field: 'The server rejected a setting or field sent by this page.',
  message_too_large: 'A message was too large for the server and was dropped.',
  audio_odd_length: 'An audio frame had the wrong size and was dropped.',
  audio_frame_too_short: 'An audio frame was too short and was dropped.',
  audio_frame_too_long: 'An audio frame was too long and was dropped.',
  rate_limited: 'Too many messages were sent too quickly; some were dropped.',
  session_closed: 'The session is closing, so that message was ignored.',
  nothing_to_commit: 'There was no speech in progress to end.',
  no_active_response: 'There was no reply in progress to interrupt.',
  slow_consumer: 'The connection could not keep up, so the server closed it.',
  // Found by the page itself, not sent by the server:
  mic_denied: 'Microphone access was refused. Allow the microphone for this site and press Start again.',
  mic_missing: 'No microphone was found.',
  insecure_context: 'The browser only allows the microphone on https:// pages or on localhost.',
  webrtc_failed: 'The audio connection (WebRTC) could not be established. Try the WebSocket transport.',
  connect_failed: 'Could not connect to the server.',
  connection_lost: 'The connection to the server was lost.',
  server_closed: 'The server ended the session.',
  decode_failed: 'The browser could not decode that file as audio (try a WAV or MP3).',
};

export function isKnownError(code) {
  return Object.hasOwn(FRIENDLY, code);
}

export function describeError(code) {
  return FRIENDLY[code] || `The server reported a problem (${code}).`;
}

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function ms(value) {
  return value === null || value === undefined ? '—' : `${Math.round(value)} ms`;
}

// One line for a reply's latency breakdown (times from the end of the user's speech).
export function formatMetrics(m) {
  if (!m) return '';
  const parts = [
    `final ${ms(m.final_ms)}`,
    `first token ${ms(m.first_token_ms)}`,
    `first audio ${ms(m.first_audio_ms)}`,
  ];
  if (m.prompt_tokens !== undefined) parts.push(`${m.cached_tokens ?? 0}/${m.prompt_tokens} prompt tokens cached`);
  if (m.speculative_prefills !== undefined) parts.push(`${m.speculative_prefills} speculative prefills`);
  return parts.join(' · ');
}

export class ConversationView {
  // els: {log, finals, typed, replies, partial, latency, errors}; log/typed/latency/errors may be null.
  constructor(els) {
    this.els = els;
    this.reset();
  }

  reset() {
    for (const key of ['finals', 'typed', 'replies', 'errors']) if (this.els[key]) this.els[key].replaceChildren();
    this.setPartial('', '');
    if (this.els.latency) {
      this.els.latency.replaceChildren(el('p', 'muted', 'No reply yet.'));
      delete this.els.latency.dataset.responseId;
    }
    this.seq = 0; // display order across #finals/#typed/#reply, which CSS interleaves
    this.finals = [];
    this.replies = [];
    this.errors = [];
    this.byId = new Map();
    this.sessionId = null;
    this.engines = null;
    this.speaking = false;
  }

  append(container, node) {
    node.style.order = String(this.seq++);
    container.append(node);
    const log = this.els.log; // keep the newest turn in view
    if (log) log.scrollTop = log.scrollHeight;
  }

  setPartial(stable, rest) {
    const p = this.els.partial;
    p.replaceChildren(el('span', 'stable', stable), el('span', 'unstable', rest));
    p.dataset.stable = stable;
    p.hidden = !stable && !rest && !this.speaking;
  }

  get activeResponseId() {
    const last = this.replies[this.replies.length - 1];
    return last && last.status === 'in_progress' ? last.response_id : null;
  }

  addTyped(text) {
    if (this.els.typed) this.append(this.els.typed, el('div', 'bubble typed', text));
  }

  // Errors found by the page itself go through the same path as the server's.
  addError(code, message, fatal) {
    this.handle({ type: 'error', code, message, fatal, local: true });
  }

  handle(event) {
    switch (event.type) {
      case 'session.created':
        this.sessionId = event.session_id;
        this.engines = event.engines || null;
        break;
      case 'speech.started':
        this.speaking = true;
        this.els.partial.dataset.turn = event.turn_id;
        this.setPartial('', '…');
        break;
      case 'transcript.partial': {
        const text = event.text || '';
        const stable = event.stable_text || '';
        // stable_text is normally a prefix of text; if not, show the hypothesis faded as a whole.
        if (text.startsWith(stable)) this.setPartial(stable, text.slice(stable.length));
        else this.setPartial('', text);
        break;
      }
      case 'speech.stopped':
        this.speaking = false;
        break;
      case 'transcript.final': {
        this.speaking = false;
        this.setPartial('', '');
        const text = event.text || '';
        const node = el('div', text ? 'bubble final' : 'bubble final empty', text || '(nothing intelligible heard)');
        node.dataset.turn = event.turn_id;
        node.dataset.text = text;
        // the recognizer was unsure: the server asks to repeat or type instead of answering these words
        if (event.low_confidence) node.classList.add('unsure');
        if (typeof event.confidence === 'number') node.dataset.confidence = String(event.confidence);
        this.finals.push(text);
        this.append(this.els.finals, node);
        break;
      }
      case 'response.started':
        this.reply(event.response_id, event.turn_id);
        break;
      case 'response.text.delta': {
        const r = this.reply(event.response_id);
        r.streamed += event.delta || '';
        r.node.querySelector('.reply-text').textContent = r.streamed;
        r.node.dataset.text = r.streamed;
        break;
      }
      case 'response.audio.started':
        this.reply(event.response_id).sample_rate = event.sample_rate;
        break;
      case 'response.audio.done':
        this.reply(event.response_id).audio_ms = event.audio_ms;
        break;
      case 'response.done':
        this.finishReply(event);
        break;
      case 'error':
        this.showError(event);
        break;
      case 'session.updated':
      case 'pong':
        break;
      default:
        console.debug('hark: ignoring unknown event', event.type); // newer servers may add events
    }
  }

  reply(responseId, turnId) {
    let r = this.byId.get(responseId);
    if (r) return r;
    const node = el('div', 'bubble reply');
    node.dataset.status = 'in_progress';
    node.dataset.responseId = responseId;
    if (turnId !== undefined) node.dataset.turn = turnId;
    node.dataset.text = '';
    node.append(el('span', 'reply-text'), el('span', 'reply-note'), el('small', 'metrics'));
    r = { response_id: responseId, turn_id: turnId ?? null, status: 'in_progress', text: '', streamed: '', metrics: null, node };
    this.byId.set(responseId, r);
    this.replies.push(r);
    this.append(this.els.replies, node);
    return r;
  }

  finishReply(event) {
    const r = this.reply(event.response_id);
    r.status = event.status;
    r.metrics = event.metrics || null;
    // text: what the user actually got; when cancelled, only what was played.
    r.text = typeof event.text === 'string' ? event.text : r.streamed;
    const textNode = r.node.querySelector('.reply-text');
    textNode.textContent = r.text;
    if (event.status === 'cancelled' && r.streamed.startsWith(r.text) && r.streamed.length > r.text.length) {
      textNode.append(el('s', 'unheard', r.streamed.slice(r.text.length))); // generated, never heard
    }
    const note = { cancelled: ' (interrupted)', failed: ' (failed)' }[event.status] || '';
    r.node.querySelector('.reply-note').textContent = note;
    r.node.querySelector('.metrics').textContent = formatMetrics(r.metrics);
    r.node.dataset.status = event.status;
    r.node.dataset.text = r.text;
    if (r.metrics) this.showLatency(r);
  }

  showLatency(r) {
    const box = this.els.latency;
    if (!box) return;
    const m = r.metrics;
    const rows = [
      ['Transcript final', ms(m.final_ms), 'finalMs', m.final_ms],
      ['First token', ms(m.first_token_ms), 'firstTokenMs', m.first_token_ms],
      ['First audio', ms(m.first_audio_ms), 'firstAudioMs', m.first_audio_ms],
      ['Prompt tokens (cached)', `${m.prompt_tokens ?? '—'} (${m.cached_tokens ?? '—'})`, 'promptTokens', m.prompt_tokens],
      ['Speculative prefills', `${m.speculative_prefills ?? '—'}`, 'speculativePrefills', m.speculative_prefills],
    ];
    const dl = el('dl', 'latency-grid');
    box.dataset.responseId = r.response_id;
    box.dataset.cachedTokens = m.cached_tokens ?? '';
    for (const [label, shown, key, raw] of rows) {
      dl.append(el('dt', '', label), el('dd', '', shown));
      box.dataset[key] = raw ?? ''; // data-final-ms, data-first-token-ms, ... for tests
    }
    box.replaceChildren(el('p', 'muted', `Last reply (${r.response_id}), ms after you stopped speaking:`), dl);
  }

  showError(event) {
    const entry = { code: event.code, message: event.message || '', fatal: !!event.fatal };
    this.errors.push(entry);
    if (!this.els.errors) return;
    const node = el('div', entry.fatal ? 'error fatal' : 'error');
    node.dataset.code = entry.code;
    node.append(el('strong', '', describeError(entry.code)));
    const from = event.local ? 'Details' : 'Server says';
    if (entry.message) node.append(el('span', 'server-message', ` ${from}: ${entry.message}`));
    this.els.errors.append(node);
    // Keep the newest few: repeated non-fatal errors should not push the page down forever.
    while (this.els.errors.children.length > 5) this.els.errors.firstElementChild.remove();
  }

  // Plain data for window.harkStats().
  snapshot() {
    return {
      sessionId: this.sessionId,
      finals: [...this.finals],
      replies: this.replies.map(({ response_id, turn_id, status, text, streamed, metrics }) => ({
        response_id,
        turn_id,
        status,
        text: status === 'in_progress' ? streamed : text,
        metrics,
      })),
      errors: this.errors.map((e) => ({ ...e })),
    };
  }
}
