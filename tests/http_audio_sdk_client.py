"""An app that uses OpenAI's transcription API, pointed at Hark. Runs with the SDK venv's python
(tests/realtime_sdk.py builds it); not imported by the tests and not run by pytest.

Usage: python http_audio_sdk_client.py BASE_URL FILE...
For every file, each response_format and then stream=True, through `client.audio.transcriptions
.create` only (the SDK's public API, as an app calls it). Prints one JSON line per call: the file,
the mode, the type the SDK returned and what it holds (`model_dump()` of its pydantic objects, the
plain string for text/srt/vtt, the list of stream events), or the error the SDK raised.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from openai import OpenAI

FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def dump(value: Any) -> Any:
    return value.model_dump() if hasattr(value, "model_dump") else value


def main(base_url: str, files: list[str]) -> None:
    client = OpenAI(base_url=base_url, api_key="not-checked", max_retries=4, timeout=120)
    for name in files:
        path = Path(name)
        for mode in (*FORMATS, "stream"):
            try:
                with path.open("rb") as fh:
                    if mode == "stream":
                        events = client.audio.transcriptions.create(
                            file=fh, model="whisper-1", stream=True, response_format="json"
                        )
                        result: Any = [dump(e) | {"sdk_type": type(e).__name__} for e in events]
                    elif mode == "verbose_json":
                        result = client.audio.transcriptions.create(
                            file=fh, model="whisper-1", response_format=mode, timestamp_granularities=["segment"]
                        )
                    else:
                        result = client.audio.transcriptions.create(file=fh, model="whisper-1", response_format=mode)
                print(
                    json.dumps({"file": path.name, "mode": mode, "type": type(result).__name__, "result": dump(result)})
                )
            except Exception as exc:  # reported to the test, which fails with it
                print(json.dumps({"file": path.name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}))
            sys.stdout.flush()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
