"""Settings of the SGLang simulator: its latency model (with the measurement it is taken from), cache and server."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

SIMULATOR_NAME: Final = "hark-sglang-simulator"
SERVER_HEADER: Final = "hark-sglang-simulator/0.1 (SGLang simulator, not SGLang)"


@dataclass
class SimConfig:
    """Latency model, cache and server settings of the simulator. All times are configurable.

    Defaults come from a published measurement of SGLang on one H100, for the closest model size we
    could cite (no published SGLang/H100 figure for Qwen3-4B was found, so these are for Qwen3-8B,
    roughly twice the weights of a 4B; a 4B model decodes and prefills faster, so the defaults are
    on the slow side):

    GPUStack performance lab, "Optimizing Qwen3-8B Latency on NVIDIA H100 GPUs",
    https://docs.gpustack.ai/latest/performance-lab/qwen3-8b/h100-latency
    (source: github.com/gpustack/gpustack, docs/performance-lab/qwen3-8b/h100-latency.md).
    Setup: one H100 SXM, Qwen/Qwen3-8B BF16, SGLang v0.5.3.post3 (`sglang.launch_server
    --model-path Qwen/Qwen3-8B`), `vllm bench serve` on ShareGPT, 100 prompts, max concurrency 4:
    Mean TTFT 27.70 ms (median 27.25) for 23260 / 100 = 232.6 input tokens per request on average,
    Mean TPOT 7.19 ms (median 7.14), Mean ITL 7.08 ms.

    So `decode_ms_per_token` = 7.2. The page gives one prompt length only, so the split of TTFT into
    a fixed part and a per-token part is ours: 0.04 ms per prompt token (25k tokens/s, about 40 %
    of the H100's 989 TFLOPS dense BF16 at 2 x 8e9 FLOP per token) and 18 ms of fixed cost
    (HTTP, tokenization, scheduling, one forward pass), which together give 18 + 232.6 x 0.04 =
    27.3 ms, the measured TTFT.
    """

    host: str = "127.0.0.1"
    port: int = 0  # 0 picks a free port (the command line defaults to SGLang's 30000)
    prefill_overhead_ms: float = 18.0
    prefill_ms_per_token: float = 0.04
    decode_ms_per_token: float = 7.2
    cache_capacity_tokens: int = 200_000
    context_length: int = 40_960  # Qwen3-4B's max_position_embeddings
    enable_priority_scheduling: bool = True  # --enable-priority-scheduling
    enable_cache_report: bool = True  # --enable-cache-report (OpenAI usage.prompt_tokens_details)
    disconnect_abort_delay_s: float = 2.0  # SGLang aborts a closed stream's request after 2 s
    request_timeout_s: float = 600.0  # no request lives longer than this
    hang_max_s: float = 300.0  # the "hang" fault holds a request at most this long
    max_request_records: int = 10_000  # finished requests kept for /sim/stats
    model_path: str = SIMULATOR_NAME
    served_model_name: str = SIMULATOR_NAME
