"""A stand-in for SGLang: SGLang's HTTP API on a radix (prefix) cache and a latency model, without a GPU.

Real SGLang needs a GPU, so tests and benchmarks talk to this simulator instead. It is not SGLang and
computes nothing: it answers with canned, deterministic replies, but it reproduces the parts of the
server that Hark's speculative prefill depends on, with the request and response shapes of SGLang's
own HTTP server (`python/sglang/srt/entrypoints/http_server.py`, `GenerateReqInput` in
`managers/io_struct.py`, the OpenAI chat serving code):

- `POST /generate` (native API): `text` or `input_ids`, `rid`, `priority`, `sampling_params`
  (`max_new_tokens` default 128, 0 = prefill only; `temperature`, `top_p`, `stop`), `stream`.
  Streaming sends `data: <json>` events with cumulative `text` and `output_ids`, then `data: [DONE]`.
  `return_logprob` (with `top_logprobs_num`, `return_text_in_logprobs`) adds SGLang's
  `meta_info.output_token_logprobs` / `output_top_logprobs`, with MADE-UP probabilities (logprobs.py):
  after a prompt ending inside the user's turn, P(`<|im_end|>`) follows the words' last character or word.
- `POST /abort_request` (`{"rid": ...}` or `{"abort_all": true}`), `GET /health`,
  `GET /get_model_info`, `GET /metrics`, `POST /flush_cache`, `GET /v1/models`,
  `POST /v1/chat/completions` (rendered with Qwen's ChatML template).
- A token-level radix cache: the longest cached prefix of a prompt is reused,
  `cached_tokens = min(matched, prompt_tokens - 1)`, a request's prompt is inserted when its prefill
  completes (prefill-only requests too), its prompt plus output when it finishes; LRU eviction by
  token capacity, nodes inserted by low-priority requests first (`--radix-eviction-policy priority`).
- A scheduler on one simulated GPU: prefills run one at a time, highest priority first, then by
  arrival (`--enable-priority-scheduling`); a prefill costs
  `prefill_overhead_ms + uncached_tokens * prefill_ms_per_token`; every running request then decodes
  one token per `decode_ms_per_token` step (batched decode). A prefill is never interrupted.
- Tools (tools.py): a prompt that offers tools (Qwen's `<tools>` block) and names one in its last
  user turn gets a canned call in Qwen's format (`<tool_call>{"name", "arguments"}</tool_call>`,
  arguments filled from the schema by a fixed rule, streamed in pieces); after `<tool_response>`s
  the reply is in words, from the results. The OpenAI route takes `tools`/`tool_choice`, renders
  them with Qwen's template and streams `tool_calls` deltas, as SGLang's `--tool-call-parser
  qwen25` does. Canned: a test stand-in, not a model's choice.
- Simulator-only endpoints for tests: `GET /sim/stats`, `POST /sim/faults`, `POST /sim/reset`.

Tokens come from a deterministic stand-in tokenizer: an approximation of BPE pre-tokenization
(a word with its leading space or punctuation, single digits, runs of punctuation, newlines and
whitespace; Qwen's special tokens such as `<|im_start|>` are one token each), one token per piece,
with ids derived from a hash of the piece. Token counts are close to, not equal to, Qwen's.

Behaviours copied from real SGLang that may surprise a client:
- `/abort_request` is a no-op unless `rid` names a request in flight, and then aborts every request
  whose rid *starts with* it (the scheduler matches by prefix): use prefix-free rids.
- Closing a streaming response aborts the request only after a delay (SGLang's background abort
  task sleeps 2 s): abort by rid to free the GPU at once.
- A semantically bad streaming request (no `text` nor `input_ids`) gets HTTP 200 with one
  `data: {"error": {"message": ...}}` event and `[DONE]`; the same non-streaming request gets 400
  `{"error": {"message": ...}}`. Type errors get 400 `{"object": "error", ...}` either way.
- `usage.prompt_tokens_details` is null when nothing was cached (and needs `--enable-cache-report`).

Modules, one job each: `config` (SimConfig: the latency model and where its numbers come from),
`tokens` (the stand-in tokenizer), `chat` (ChatML template, canned replies), `tools` (canned tool
calls, the OpenAI route's tool_calls), `logprobs` (made-up next-token logprobs in SGLang's shapes),
`radix` (the prefix cache), `request` (one request's state), `scheduler` (the simulated GPU: prefill
queue, batched decode, aborts), `faults` (injected failures), `parse` (request bodies -> requests,
with SGLang's checks), `payloads` (response bodies in SGLang's shapes), `wire` (JSON/SSE/error
plumbing), `http_app` (the aiohttp server) and `cli` (`python -m standins.sglang`).

Run it: `python -m standins.sglang --host 127.0.0.1 --port 30000`. In-process:
`async with SGLangSimulator(SimConfig(port=0)) as sim: ... sim.url ...`.
"""

from .chat import canned_reply, last_user_turn, render_chatml
from .config import SIMULATOR_NAME, SimConfig
from .http_app import SGLangSimulator
from .radix import RadixCache
from .tokens import IM_END_ID, SPECIAL_TOKENS, StandInTokenizer

__all__ = [
    "IM_END_ID",
    "SIMULATOR_NAME",
    "SPECIAL_TOKENS",
    "RadixCache",
    "SGLangSimulator",
    "SimConfig",
    "StandInTokenizer",
    "canned_reply",
    "last_user_turn",
    "render_chatml",
]
