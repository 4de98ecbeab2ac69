"""Server configuration: defaults < config file (TOML) < HARK_* environment variables < command line."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hark.protocol import ProtocolError, SessionConfig, SessionLimits

from .asr.registry import ASR_ENGINES
from .llm.registry import LLM_ENGINES
from .tts.registry import TTS_ENGINES


@dataclass(slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8765
    asr: str = "pocketsphinx"
    llm: str = "echo"
    tts: str = "espeak"
    api_keys: list[str] = field(default_factory=list)
    metrics_public: bool = False  # with api_keys: true serves /metrics without a key
    allowed_origins: list[str] = field(default_factory=list)  # empty: any Origin (or none) is accepted
    # concurrent sessions; 0: what the ASR workers carry (server/admission.py: pocketsphinx 12 per worker)
    max_sessions: int = 0
    asr_workers: int = 0  # 0: one per CPU, at most 4 (pocketsphinx decodes on one core per process)
    # FunASR engines: a local model directory or a ModelScope id (empty: the engine's default id)
    asr_model: str = ""
    asr_model_offline: str = ""  # funasr-paraformer-streaming's 2-pass model
    punc_model: str = ""  # punctuation for the 2-pass final
    asr_2pass: bool = True
    asr_language: str = "auto"  # funasr-window with SenseVoice: auto, zh, en, yue, ja, ko
    asr_window_s: float = 4.0  # funasr-window: longest audio re-decoded; text before it is committed
    asr_step_ms: int = 500  # funasr-window: new audio between re-decodes
    asr_worker_kind: str = "process"  # FunASR inference workers: process or thread (docs/performance.md)
    asr_threads: int = 1  # FunASR: torch threads per worker (FunASR's ncpu)
    # funasr-paraformer-streaming's batched stages: torch, onnx or onnx-int8 (exported beside the model),
    # or auto: onnx when the model directory holds a current export, else torch
    asr_runtime: str = "auto"
    # server processes sharing the port (SO_REUSEPORT); metrics are merged across them
    workers: int = 1
    reuse_port: bool = False  # set by the --workers supervisor on the processes it starts
    # one onnxruntime call per tick for every session with a VAD window ready (false: one per session)
    vad_batching: bool = True
    # Smart Turn ONNX file for semantic turn detection (empty: the one `make install` fetched)
    turn_model: str = ""
    # the sessions' default turn_detection: JSON or a policy's type ("semantic", "silence"); empty:
    # semantic when the turn model is installed, else silence (server/turn/setup.py)
    turn_detection: str = ""
    # refuse new sessions (server_busy) while the event loop runs this late on average (smoothed over
    # ~2 s): past it, every session's frames and replies are late. 0 turns the guard off
    overload_loop_lag_ms: float = 250.0
    # ... or while audio frames wait this long on average before the VAD takes them (the server
    # is falling behind real time). 0 turns this guard off
    overload_frame_wait_ms: float = 500.0
    # ... or while the recognizer trails the audio by this much on average: a speaking session's
    # newest frame (arrival -> recognized, last 2 s) or a turn's final transcript (end decided ->
    # final, last 5 s), server/context.py LagMeter. 0 turns this guard off
    overload_asr_lag_ms: float = 300.0
    inference_threads: int = 2
    log_level: str = "INFO"
    # outbound queue per session; a client that stops reading for this long is disconnected (a
    # send blocked this long, or no pong to the ping that follows output within this long)
    send_queue_limit: int = 512
    slow_consumer_timeout_s: float = 5.0
    # WebSocket ping and pong frames a client may send per second (twice that as a burst); past it
    # the connection closes with 1008 ping_flood: websockets answers every ping without flow control
    ws_max_pings_per_s: float = 10.0
    # HTTP routes (server/http/): request bodies over this are refused with 413 before they are read
    http_max_body_mb: float = 25.0
    # HTTP requests a second per API key (per client IP without keys), twice that as a burst; 0: no limit
    http_rate_limit: float = 20.0
    # the HTTP audio routes (transcriptions, voice turns) refuse audio longer than this with 413 audio_too_long
    http_max_audio_s: float = 600.0
    # kernel send buffer per connection (0: the OS default, which can grow to MBs); smaller finds
    # clients that stopped reading sooner and bounds memory per connection
    send_buffer_bytes: int = 0
    # audio sent ahead of real time, so playback on the client never starves
    audio_lead_ms: int = 200
    output_frame_ms: int = 100
    max_history_messages: int = 40
    # language model server (--llm sglang | openai)
    llm_url: str = ""
    llm_model: str = ""
    llm_api_key: str = ""
    llm_max_tokens: int = 200
    llm_temperature: float = 0.7
    llm_top_p: float = 0.8
    llm_system_prompt: str = ""  # empty: the built-in voice-first prompt (server/llm/prompt.py)
    llm_history_tokens: int = 6000  # oldest turns are dropped past this
    llm_empty_think: bool = True  # Qwen3 hybrid models: thinking off; false for instruct-only models
    llm_speculation: bool = True
    llm_speculation_min_words: int = 2  # stable words added before the next prefill
    llm_connect_timeout_s: float = 3.0
    llm_first_byte_timeout_s: float = 15.0
    llm_idle_timeout_s: float = 10.0
    llm_breaker_failures: int = 3
    llm_breaker_reset_s: float = 10.0
    # speech server (--tts openai | fish | cosyvoice) and where cloned voices live (server/tts/voices.py)
    tts_url: str = ""
    tts_model: str = ""
    tts_api_key: str = ""
    voices_dir: str = "voices"
    # MCP servers whose tools sessions may use (server/tools/): NAME=COMMAND (stdio) or NAME=URL (streamable HTTP)
    mcp_servers: list[str] = field(default_factory=list)
    mcp_tools: list[str] = field(default_factory=list)  # allow-list: TOOL, SERVER:TOOL or SERVER:*; empty: all
    tool_timeout_s: float = 10.0  # a server tool call taking longer is cancelled and the model told so
    # a JSON file of function tools every session starts with (a list, or {"tools": [...], "tool_choice": ...})
    tools_file: str = ""
    # the sessions' default client_tool_timeout_s (0: the protocol's default, 30 s)
    client_tool_timeout_s: float = 0.0
    # STUN/TURN for browsers behind NAT, e.g. [{urls = "turn:turn.example:3478", username = "u", credential = "p"}];
    # none by default (aiortc would otherwise add a public STUN server)
    webrtc_ice_servers: list[dict[str, Any]] = field(default_factory=list)
    # a WebRTC session whose peer has not connected this long after the answer is ended (its slot freed)
    webrtc_connect_timeout_s: float = 10.0
    session_defaults: SessionConfig = field(default_factory=SessionConfig)
    limits: SessionLimits = field(default_factory=SessionLimits)


_LIST_FIELDS = {"api_keys", "allowed_origins", "webrtc_ice_servers"}
_NESTED = {"session_defaults": SessionConfig, "limits": SessionLimits}
# limits that are also plain options (--idle-timeout-s, HARK_IDLE_TIMEOUT_S): they land in `limits`
_LIMIT_OPTIONS = {"idle_timeout_s"}
_LIST_FIELDS |= {"mcp_servers", "mcp_tools"}  # HARK_MCP_SERVERS: comma-separated, so no commas in commands


def _coerce(name: str, value: Any, current: Any) -> Any:
    if name == "webrtc_ice_servers" and isinstance(value, str):
        return json.loads(value)  # HARK_WEBRTC_ICE_SERVERS='[{"urls": "stun:stun.example:3478"}]'
    if name in _LIST_FIELDS:
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
        return list(value)
    if isinstance(current, bool):
        return value if isinstance(value, bool) else str(value).lower() in {"1", "true", "yes", "on"}
    if isinstance(current, int):
        return int(value)
    if isinstance(current, float):
        return float(value)
    return value


def _apply(config: ServerConfig, values: Mapping[str, Any], source: str) -> None:
    names = {f.name for f in dataclasses.fields(config)} | _LIMIT_OPTIONS
    for key, value in values.items():
        if key not in names:
            raise ValueError(f"{source}: unknown setting {key!r} (known: {', '.join(sorted(names))})")
        if key in _LIMIT_OPTIONS:
            try:
                limit = _coerce(key, value, getattr(config.limits, key))
            except (TypeError, ValueError):
                raise ValueError(f"{source}: bad value for {key}: {value!r}") from None
            config.limits = dataclasses.replace(config.limits, **{key: limit})
            continue
        if key in _NESTED:
            current = getattr(config, key)
            try:
                setattr(config, key, dataclasses.replace(current, **dict(value)))
            except TypeError as exc:
                raise ValueError(f"{source}: bad [{key}] table: {exc}") from None
            if key == "session_defaults":
                config.session_defaults.updated(config.session_defaults.to_dict())  # validates ranges
            continue
        try:
            setattr(config, key, _coerce(key, value, getattr(config, key)))
        except (TypeError, ValueError):
            raise ValueError(f"{source}: bad value for {key}: {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hark-server",
        description="Hark real-time voice-assistant server. Every option is also an env var HARK_<NAME>.",
    )
    p.add_argument("--host", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="TCP port (default 8765; 0 picks a free one)")
    p.add_argument("--config", help="TOML file with any of the settings below")
    p.add_argument(
        "--asr",
        choices=ASR_ENGINES.names(),
        help="speech recognizer (default pocketsphinx; none: VAD events only, the ingest path)",
    )
    p.add_argument("--asr-model", help="FunASR model: a local directory or a ModelScope id")
    p.add_argument("--asr-model-offline", help="FunASR offline paraformer for the 2-pass final")
    p.add_argument("--punc-model", help="FunASR punctuation model (ct-punc) for the 2-pass final")
    p.add_argument(
        "--2pass",
        dest="asr_2pass",
        action=argparse.BooleanOptionalAction,
        help="funasr-paraformer-streaming: re-decode each utterance offline at the endpoint (default on)",
    )
    p.add_argument("--asr-language", help="funasr-window with SenseVoice: auto, zh, en, yue, ja, ko")
    p.add_argument("--asr-window-s", type=float, help="funasr-window: longest window re-decoded (default 4)")
    p.add_argument("--asr-step-ms", type=int, help="funasr-window: new audio between re-decodes (default 500)")
    p.add_argument(
        "--asr-worker-kind", choices=["process", "thread"], help="FunASR inference workers (default process)"
    )
    p.add_argument("--asr-threads", type=int, help="FunASR: torch threads per inference worker (default 1)")
    p.add_argument(
        "--asr-runtime",
        choices=["auto", "torch", "onnx", "onnx-int8"],
        help="funasr-paraformer-streaming: run the encoder and decoder on torch or onnxruntime (fp32 or int8; "
        "exported once beside the model at the first start); auto: onnx fp32 when the model directory holds a "
        "current export (make funasr-onnx), else torch (default auto)",
    )
    p.add_argument("--llm", choices=LLM_ENGINES.names(), help="language model (default echo: offline demo mode)")
    p.add_argument("--llm-url", help="model server base URL, e.g. http://127.0.0.1:30000")
    p.add_argument("--llm-model", help="model name (--llm openai)")
    p.add_argument("--llm-api-key", help="bearer key for the model server")
    p.add_argument("--llm-max-tokens", type=int, help="reply length cap in tokens (default 200)")
    p.add_argument("--llm-system-prompt", help="system prompt (default: a built-in voice-first prompt)")
    p.add_argument(
        "--llm-speculation",
        action=argparse.BooleanOptionalAction,
        help="prefill the confident transcript prefix while the user talks (sglang; default on)",
    )
    p.add_argument("--tts", choices=TTS_ENGINES.names(), help="speech synthesizer (default espeak)")
    p.add_argument("--tts-url", help="speech server base URL, e.g. http://127.0.0.1:8880 (--tts openai|fish|cosyvoice)")
    p.add_argument("--tts-model", help="speech model: openai's `model` field; cosyvoice: the model the server runs")
    p.add_argument("--tts-api-key", help="bearer key for the speech server")
    p.add_argument("--voices-dir", help="cloned voices: voices.toml and the clips clients register (default ./voices)")
    p.add_argument("--api-key", dest="api_keys", action="append", help="accepted key; repeat for several")
    p.add_argument("--allowed-origin", dest="allowed_origins", action="append", help="allowed Origin header")
    p.add_argument("--http-max-body-mb", type=float, help="largest HTTP request body, MB (default 25; 413 past it)")
    p.add_argument(
        "--http-rate-limit",
        type=float,
        help="HTTP requests a second per API key, or per client IP without keys (default 20, burst 40; 0: off)",
    )
    p.add_argument(
        "--http-max-audio-s",
        type=float,
        help="longest audio the HTTP audio routes take, seconds (default 600; 413 audio_too_long past it)",
    )
    p.add_argument(
        "--metrics-public",
        action=argparse.BooleanOptionalAction,
        help="serve /metrics without an API key even when --api-key is set (default: the keys protect it)",
    )
    p.add_argument(
        "--idle-timeout-s",
        type=float,
        help="close a session with idle_timeout after this long without audio or events (default 60; 0: never)",
    )
    p.add_argument(
        "--max-sessions",
        type=int,
        help="concurrent sessions before refusing with server_busy (default 0: what the ASR workers carry, "
        "measured: pocketsphinx 12 per worker, FunASR 4 per worker, --asr none 500)",
    )
    p.add_argument(
        "--asr-workers",
        type=int,
        help="ASR inference workers (default 0: one per CPU; at most 4 for pocketsphinx)",
    )
    p.add_argument("--workers", type=int, help="server processes sharing the port with SO_REUSEPORT (default 1)")
    p.add_argument(
        "--vad-batching",
        action=argparse.BooleanOptionalAction,
        help="run every session's VAD window in one model call per tick (default on)",
    )
    p.add_argument("--turn-model", help="Smart Turn ONNX file (default: the one `make install` fetched)")
    p.add_argument(
        "--turn-detection",
        help='default turn ending: semantic, silence, or JSON such as \'{"type":"semantic","eagerness":"high"}\' '
        "(default: semantic when the turn model is installed, else silence)",
    )
    p.add_argument(
        "--overload-loop-lag-ms",
        type=float,
        help="refuse new sessions while the smoothed event-loop lag is above this (default 250; 0: off)",
    )
    p.add_argument(
        "--overload-frame-wait-ms",
        type=float,
        help="refuse new sessions while audio frames wait this long before processing (default 500; 0: off)",
    )
    p.add_argument(
        "--overload-asr-lag-ms",
        type=float,
        help="refuse new sessions while speech recognition trails the audio by this much on average, "
        "while people speak or at their turns' ends (default 300; 0: off)",
    )
    p.add_argument(
        "--mcp-server",
        dest="mcp_servers",
        action="append",
        metavar="NAME=COMMAND|URL",
        help="an MCP server whose tools sessions may call: NAME=COMMAND ARGS (started here, stdio) or "
        "NAME=http(s)://... (streamable HTTP); repeat for several (needs pip install 'hark[mcp]')",
    )
    p.add_argument(
        "--mcp-tools",
        dest="mcp_tools",
        action="append",
        metavar="TOOL|SERVER:TOOL|SERVER:*",
        help="offer only these MCP tools; repeat for several (default: every tool of every --mcp-server)",
    )
    p.add_argument(
        "--tool-timeout-s", type=float, help="a server (MCP) tool call taking longer is cancelled (default 10)"
    )
    p.add_argument(
        "--tools-file",
        help='JSON file of the sessions\' default function tools: [{"type": "function", "name", "description", '
        '"parameters"}, ...] or {"tools": [...], "tool_choice": ...}; clients run them (function_call.output)',
    )
    p.add_argument(
        "--client-tool-timeout-s",
        type=float,
        help="a client tool not answered this soon is a timeout error for the model (default 30; sessions may set it)",
    )
    p.add_argument("--reuse-port", action="store_true", default=None, help=argparse.SUPPRESS)
    p.add_argument("--log-level", help="DEBUG, INFO, WARNING, ERROR")
    return p


def load_config(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> ServerConfig:
    args = build_parser().parse_args(argv)
    environ = os.environ if environ is None else environ
    config = ServerConfig()
    config_file = args.config or environ.get("HARK_CONFIG")
    if config_file:
        with open(config_file, "rb") as fh:
            _apply(config, tomllib.load(fh), config_file)
    settable = ({f.name for f in dataclasses.fields(config)} | _LIMIT_OPTIONS) - set(_NESTED)
    env_values = {name: environ[f"HARK_{name.upper()}"] for name in settable if f"HARK_{name.upper()}" in environ}
    _apply(config, env_values, "environment")
    cli_values = {k: v for k, v in vars(args).items() if v is not None and k != "config"}
    _apply(config, cli_values, "command line")
    _apply_tool_defaults(config)
    return config


def _apply_tool_defaults(config: ServerConfig) -> None:
    """--tools-file and --client-tool-timeout-s into the sessions' defaults, checked as a client's would be."""
    patch: dict[str, Any] = {}
    if config.client_tool_timeout_s:
        patch["client_tool_timeout_s"] = config.client_tool_timeout_s
    if config.tools_file:
        try:
            with open(config.tools_file, encoding="utf-8") as fh:
                data = json.load(fh)
        except (OSError, ValueError) as exc:
            raise ValueError(f"--tools-file {config.tools_file}: {exc}") from None
        patch.update(data if isinstance(data, dict) else {"tools": data})
        if set(patch) - {"tools", "tool_choice", "client_tool_timeout_s"}:
            raise ValueError(f"--tools-file {config.tools_file}: only tools and tool_choice may be set there")
    if not patch:
        return
    try:
        config.session_defaults = config.session_defaults.updated(patch)
        config.session_defaults.check_tool_choice()
    except ProtocolError as exc:
        raise ValueError(f"--tools-file / --client-tool-timeout-s: {exc}") from None
