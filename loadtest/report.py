"""The run's output: a JSON file of every turn and all metadata, and a self-contained HTML report.

Plots are matplotlib (Agg backend) PNGs embedded as base64, so the report is one file to attach.
"""

from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib
import msgspec

matplotlib.use("Agg")  # no display; must precede pyplot
import matplotlib.pyplot as plt

from .stats import percentile

NOT_REPORTED = "not reported"
STAGE_LABELS = {
    "final_ms": "speech end -> transcript.final",
    "first_token_ms": "speech end -> first token",
    "first_audio_ms": "speech end -> first reply audio",
}


def _builtins(value: Any) -> Any:
    """Plain JSON types: a scenario's [session] holds parsed config objects (a turn_detection policy)."""
    return msgspec.to_builtins(value, enc_hook=str)


def _cell(value: Any) -> Any:
    return json.dumps(_builtins(value), default=str) if isinstance(value, dict | list) else value


def write_json(path: Path, result: dict[str, Any]) -> None:
    path.write_text(json.dumps(_builtins(result), indent=1, default=str))


# ---------------------------------------------------------------- plots


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return f'<img alt="plot" src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}">'


def _values(turns: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [float(t[key]) for t in turns if t.get(key) is not None]


def plot_cdfs(turns: Sequence[dict[str, Any]]) -> str:
    fig, ax = plt.subplots(figsize=(7.5, 4))
    drawn = False
    for key, label in STAGE_LABELS.items():
        values = sorted(_values(turns, key))
        if values:
            ax.step(values, [(i + 1) / len(values) for i in range(len(values))], where="post", label=label)
            drawn = True
    server = sorted(float(v) for t in turns if isinstance(v := t["server_metrics"].get("first_audio_ms"), int | float))
    if server:
        ax.step(
            server,
            [(i + 1) / len(server) for i in range(len(server))],
            "--",
            where="post",
            label="first audio (server's metrics)",
        )
        drawn = True
    if not drawn:
        plt.close(fig)
        return "<p>No latency measured.</p>"
    ax.set_xlabel("ms")
    ax.set_ylabel("fraction of turns")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def plot_vs_active(turns: Sequence[dict[str, Any]]) -> str:
    points = [(t["active_sessions"], t["first_audio_ms"]) for t in turns if t.get("first_audio_ms") is not None]
    key = "first audio"
    if not points:
        points = [(t["active_sessions"], t["final_ms"]) for t in turns if t.get("final_ms") is not None]
        key = "transcript.final"
    if not points:
        return "<p>No latency measured.</p>"
    fig, ax = plt.subplots(figsize=(7.5, 4))
    ax.scatter([p[0] for p in points], [p[1] for p in points], s=8, alpha=0.5)
    by_n: dict[int, list[float]] = {}
    for n, v in points:
        by_n.setdefault(n, []).append(v)
    xs = sorted(by_n)
    ax.plot(xs, [percentile(by_n[x], 50) or 0.0 for x in xs], "r-", label="median")
    ax.plot(xs, [percentile(by_n[x], 95) or 0.0 for x in xs], "k--", label="p95")
    ax.set_xlabel("sessions active at speech end")
    ax.set_ylabel(f"speech end -> {key} (ms)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _png(fig)


def _series_plot(series: dict[str, list[Any]], panels: Sequence[tuple[str, str, Sequence[tuple[str, str]]]]) -> str:
    """One subplot per panel; a panel whose series are all None says 'not reported'."""
    t = series.get("t", [])
    fig, axes = plt.subplots(len(panels), 1, figsize=(7.5, 2.6 * len(panels)), sharex=True, squeeze=False)
    for ax, (title, ylabel, lines) in zip(axes[:, 0], panels, strict=True):
        drawn = False
        for key, label in lines:
            ys = series.get(key, [])
            pts = [(x, y) for x, y in zip(t, ys, strict=False) if y is not None]
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
                drawn = True
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if drawn:
            ax.legend(fontsize=8)
        else:
            ax.text(0.5, 0.5, NOT_REPORTED, ha="center", va="center", transform=ax.transAxes, color="gray")
    axes[-1, 0].set_xlabel("seconds since the run started")
    return _png(fig)


def plot_server(series: dict[str, list[Any]]) -> str:
    return _series_plot(
        series,
        [
            ("server CPU (process tree)", "cores", [("cpu_cores", "CPU")]),
            ("server resident memory (process tree)", "MiB", [("rss_mib", "RSS")]),
            ("sessions open (server)", "sessions", [("sessions_open", "open")]),
        ],
    )


def plot_lag(series: dict[str, list[Any]]) -> str:
    return _series_plot(
        series, [("event-loop lag per scrape interval", "ms", [("lag_p99_ms", "p99"), ("lag_mean_ms", "mean")])]
    )


def plot_frames(series: dict[str, list[Any]]) -> str:
    return _series_plot(
        series,
        [
            (
                "audio frames since the run started",
                "frames",
                [
                    ("sent", "sent (harness)"),
                    ("received", "received (server)"),
                    ("processed", "processed by VAD (server)"),
                ],
            )
        ],
    )


# ---------------------------------------------------------------- tables


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return NOT_REPORTED
    if isinstance(v, float):
        return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:.3g}{unit}"
    return f"{v}{unit}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_fmt(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _latency_rows(summary: dict[str, Any]) -> list[list[Any]]:
    rows = []
    for side, key in (("client", "client_ms"), ("server metrics", "server_ms")):
        for stage, label in STAGE_LABELS.items():
            s = summary[key].get(stage, {})
            rows.append([f"{label} ({side})", s.get("n"), s.get("p50"), s.get("p95"), s.get("p99"), s.get("max")])
    b = summary.get("barge_in_stop_ms", {})
    rows.append(
        ["barge-in -> reply stopped (client)", b.get("n"), b.get("p50"), b.get("p95"), b.get("p99"), b.get("max")]
    )
    return rows


CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left}.pass{color:#070}.fail{color:#b00}img{max-width:100%}
code{background:#f4f4f4;padding:1px 4px}"""


def render_html(result: dict[str, Any]) -> str:
    meta, summary, verdict = result["meta"], result["summary"], result["verdict"]
    server = summary.get("server", {})
    turns = result["turns"]
    series = result.get("series", {})
    state = "PASS" if verdict["passed"] else "FAIL"
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>hark-loadtest {state}</title><style>{CSS}</style></head><body>",
        f"<h1>hark-loadtest: <span class='{state.lower()}'>{state}</span></h1>",
        f"<p><code>{html.escape(meta.get('command', ''))}</code></p>",
        _table(
            ["run", ""],
            [[k, _cell(v)] for k, v in meta.items() if k != "command"],
        ),
        f"<h2>Verdict ({html.escape(verdict['mode'])} mode)</h2>",
        _table(
            ["check", "value", "limit", "ok", "note"],
            [[c["name"], c["value"], c["limit"], "yes" if c["ok"] else "NO", c["note"]] for c in verdict["checks"]],
        ),
    ]
    capacity = result.get("capacity")
    if capacity:
        parts.append(f"<h2>Capacity: {html.escape(_fmt(capacity['held']))} sessions held</h2>")
        parts.append(
            _table(
                [
                    "sessions",
                    "held",
                    "turns",
                    "p50 first audio ms",
                    "p95 first audio ms",
                    "loop lag p99 ms",
                    "server CPU s",
                    "errors",
                    "bad turns",
                    "dropped frames",
                    "why not",
                ],
                [
                    [
                        s["sessions"],
                        "yes" if s["passed"] else "NO",
                        s["turns"],
                        s["p50_first_audio_ms"],
                        s["p95_first_audio_ms"],
                        s["loop_lag_p99_ms"],
                        s["cpu_seconds"],
                        s["errors"],
                        s["bad_turns"],
                        s["frames_dropped"],
                        "; ".join(s["failures"]),
                    ]
                    for s in capacity["steps"]
                ],
            )
        )
    parts += [
        "<h2>Turns</h2>",
        _table(["status", "turns"], sorted(summary["statuses"].items())),
        _table(
            ["", "value"],
            [
                ["barge-ins (reply interrupted by the scenario)", summary["barge_ins"]],
                ["... of which the server cancelled", summary["barge_in_cancelled"]],
                ["reply audio received (s)", summary["reply_audio_s"]],
                ["turns with playback underruns", summary["turns_with_underruns"]],
                ["underruns / total gap (ms)", f"{summary['underruns']} / {summary['underrun_ms']:.0f}"],
                ["most sessions active at a turn", summary["max_active_sessions"]],
                ["harness: worst frame send lag (ms)", summary["max_client_send_lag_ms"]],
            ],
        ),
        "<h2>Latency</h2>",
        _table(["stage (ms)", "n", "p50", "p95", "p99", "max"], _latency_rows(summary)),
        plot_cdfs(turns),
        "<h3>Latency against active sessions</h3>",
        plot_vs_active(turns),
        "<h2>Server</h2>",
        _table(
            ["", "value"],
            [
                ["CPU over the run (s)", server.get("cpu_seconds")],
                ["CPU per session-second", summary.get("cpu_per_session_second")],
                ["session-seconds", summary["session_seconds"]],
                [
                    "peak resident memory (MiB)",
                    None if server.get("rss_peak_bytes") is None else server["rss_peak_bytes"] / 2**20,
                ],
                ["memory per session (MiB, peak - start over peak sessions)", summary.get("memory_per_session_mib")],
                ["event-loop lag p99 (ms)", server.get("loop_lag_p99_ms")],
                ["event-loop lag mean (ms)", server.get("loop_lag_mean_ms")],
            ],
        ),
        plot_server(series),
        "<h3>Event-loop lag</h3>",
        plot_lag(series),
        "<h2>Audio frames</h2>",
        _table(
            ["", "frames"],
            [
                ["sent by the harness", summary["frames_sent"]],
                ["received by the server", server.get("frames_received")],
                ["processed by the server (VAD)", server.get("frames_processed")],
                ["dropped by the server", server.get("frames_dropped")],
            ]
            + [[f"dropped: {k}", v] for k, v in (server.get("dropped_by_reason") or {}).items()],
        ),
        plot_frames(series),
        "<h2>Errors and disconnects</h2>",
        _table(
            ["error code", "seen by the harness", "counted by the server"],
            [
                [code, summary["errors_by_code"].get(code, 0), server.get("errors_by_code", {}).get(code, 0)]
                for code in sorted(set(summary["errors_by_code"]) | set(server.get("errors_by_code", {})))
            ]
            or [["none", 0, 0]],
        ),
        _table(["unexpected close", "sessions"], sorted(summary["disconnects"].items()) or [["none", 0]]),
        _table(
            ["first errors: t (s)", "session", "code", "fatal", "message"],
            [[e["at"], e["session"], e["code"], e["fatal"], e["message"]] for e in result.get("errors", [])[:50]],
        ),
        "</body></html>",
    ]
    return "\n".join(parts)


def write_html(path: Path, result: dict[str, Any]) -> None:
    path.write_text(render_html(result))
