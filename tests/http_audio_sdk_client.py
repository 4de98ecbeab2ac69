"""An app that uses OpenAI's transcription API, pointed at Hark. Runs with the SDK venv's python
(tests/realtime_sdk.py builds it); not imported by the tests and not run by pytest.

Usage: python http_audio_sdk_client.py BASE_URL FILE...
For every file, each response_format and then stream=True, through `client.audio.transcriptions
.create` only (the SDK's public API, as an app calls it). Prints one JSON line per call: the file,
the mode, the type the SDK returned and what it holds (`model_dump()` of its pydantic objects, the
plain string for text/srt/vtt, the list of stream events), or the error the SDK raised.

       python http_audio_sdk_client.py --chat BASE_URL FILE
`client.chat.completions.create` with the seed's audio fields in `extra_body`, plain and streamed,
and a plain chat (messages only) streamed; the same JSON lines.
"""

from __future__ import annotations

import base64
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


def chat(base_url: str, name: str) -> None:
    client = OpenAI(base_url=base_url, api_key="not-checked", max_retries=4, timeout=120)
    seed = {"audio_base64": base64.b64encode(Path(name).read_bytes()).decode(), "prompt_template": "Q: {asr_text}"}
    calls: dict[str, Any] = {
        "audio": lambda: client.chat.completions.create(model="qwen", messages=[], extra_body=seed),
        "audio_stream": lambda: client.chat.completions.create(model="qwen", messages=[], stream=True, extra_body=seed),
        "text_stream": lambda: client.chat.completions.create(
            model="qwen", messages=[{"role": "user", "content": "hello there"}], stream=True
        ),
    }
    for mode, call in calls.items():
        try:
            result = call()
            dumped = dump(result) if mode == "audio" else [dump(c) | {"sdk_type": type(c).__name__} for c in result]
            print(json.dumps({"file": Path(name).name, "mode": mode, "type": type(result).__name__, "result": dumped}))
        except Exception as exc:  # reported to the test, which fails with it
            print(json.dumps({"file": Path(name).name, "mode": mode, "error": f"{type(exc).__name__}: {exc}"}))
        sys.stdout.flush()


if __name__ == "__main__":
    if sys.argv[1] == "--chat":
        chat(sys.argv[2], sys.argv[3])
    else:
        main(sys.argv[1], sys.argv[2:])
