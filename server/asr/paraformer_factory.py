"""Which paraformer-streaming host a worker builds: streams batched, or one FunASR call per stream."""

from __future__ import annotations

from typing import Any

from .paraformer_batch import DEFAULT_MAX_BATCH
from .paraformer_batch_host import ParaformerBatchHost
from .paraformer_host import ParaformerStreamingHost


class ParaformerHostFactory:
    """Picklable, so a spawned worker process builds its own models. `max_batch` > 1 (the default):
    streams decoded together (`paraformer_batch_host`); 1: one `generate` call per stream, except
    on an ONNX runtime (`settings["runtime"]`), which always runs the batched host (batches of one)."""

    def __init__(self, settings: dict[str, Any]) -> None:
        self.settings = settings

    @property
    def batched(self) -> bool:
        onnx = self.settings.get("runtime", "torch") != "torch"
        return onnx or int(self.settings.get("max_batch", DEFAULT_MAX_BATCH)) > 1

    def __call__(self) -> ParaformerStreamingHost:
        if self.batched:
            return ParaformerBatchHost(self.settings)
        return ParaformerStreamingHost(self.settings)
