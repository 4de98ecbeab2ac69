"""Stand-ins: labelled simulators of servers Hark talks to but that cannot run here.

Every module in this package is a stand-in, not the real thing. Each one says so in its docstring,
in its HTTP `Server` header or model name where it has one, and in its ready line, and answers with
canned, deterministic output: it reproduces the parts of the real server's API and timing that Hark's
code depends on, so tests and benchmarks can exercise that code without a GPU or the real model.
Numbers measured against a stand-in are the stand-in's latency model, never the real server's.

- `standins.sglang`: SGLang (native `/generate`, radix cache, priority scheduler, latency model);
  `python -m standins.sglang --port 30000`.
- Stand-ins for TTS servers and others go beside it, one package or module each.

Stand-ins run from a checkout (they are not installed with `hark`) and never import `hark.server`:
they simulate what Hark talks to, so they must not lean on Hark's own code.
"""
