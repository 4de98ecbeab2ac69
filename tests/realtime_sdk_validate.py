"""Check Realtime server events against the OpenAI SDKs' own types. Runs with the SDK venv's python.

Usage: python realtime_sdk_validate.py ga|beta < events.jsonl
Prints one JSON line per finding, nothing when every event passes:
  {"kind": "rejection", "index", "type", "dialect", "error"}  an event a check refused
  {"kind": "sent", "index", "message"}  a client event openai-agents sent in answer to event `index`
GA events go through three checks: pydantic validation against `openai.types.realtime.RealtimeServerEvent`
(discriminated on `type`, as openai-agents builds it), the session payloads of session.created/updated
against `RealtimeSessionCreateRequest` (agents drops a session it cannot parse and loses the audio
format), and the whole stream through openai-agents' own event handler, which reports every event it
cannot use as an error. Beta events are validated against `openai.types.beta.realtime.RealtimeServerEvent`.
This file is not imported by the tests: it only runs inside that venv (tests/realtime_sdk.py).
"""

from __future__ import annotations

import asyncio
import json
import sys
from typing import Annotated, Any

import pydantic
from pydantic import Field, TypeAdapter


def emit(**fields: Any) -> None:
    print(json.dumps(fields), flush=True)


def validate_each(events: list[dict[str, Any]], union: Any, dialect: str) -> None:
    adapter: TypeAdapter[Any] = TypeAdapter(Annotated[union, Field(discriminator="type")])
    for index, event in enumerate(events):
        try:
            adapter.validate_python(event)
        except pydantic.ValidationError as exc:
            emit(kind="rejection", index=index, type=event.get("type"), dialect=dialect, error=str(exc)[:2000])


def check_sessions(events: list[dict[str, Any]]) -> None:
    from openai.types.realtime.realtime_session_create_request import RealtimeSessionCreateRequest

    for index, event in enumerate(events):
        if event.get("type") in ("session.created", "session.updated"):
            try:
                RealtimeSessionCreateRequest.model_validate(event.get("session"))
            except pydantic.ValidationError as exc:
                emit(kind="rejection", index=index, type=event["type"], dialect="ga-session", error=str(exc)[:2000])


async def through_agents(events: list[dict[str, Any]]) -> None:
    from agents.realtime.model import RealtimeModelListener
    from agents.realtime.model_events import RealtimeModelErrorEvent, RealtimeModelExceptionEvent
    from agents.realtime.openai_realtime import OpenAIRealtimeWebSocketModel

    current = {"index": -1}

    class Socket:  # stands in for the connection: records what the SDK would send back
        async def send(self, payload: str) -> None:
            emit(kind="sent", index=current["index"], message=json.loads(payload))

    class Listener(RealtimeModelListener):
        async def on_event(self, event: Any) -> None:
            index = current["index"]
            kind = events[index].get("type")
            if isinstance(event, RealtimeModelErrorEvent) and isinstance(event.error, pydantic.ValidationError):
                emit(kind="rejection", index=index, type=kind, dialect="ga-agents", error=str(event.error)[:2000])
            elif isinstance(event, RealtimeModelExceptionEvent):
                emit(kind="rejection", index=index, type=kind, dialect="ga-agents", error=repr(event.exception)[:2000])

    model = OpenAIRealtimeWebSocketModel()
    model._websocket = Socket()  # type: ignore[assignment]
    model.add_listener(Listener())
    for index, event in enumerate(events):
        current["index"] = index
        try:
            await model._handle_ws_event(event)
        except Exception as exc:  # a crash in the SDK's handler is a rejection too
            emit(kind="rejection", index=index, type=event.get("type"), dialect="ga-agents", error=repr(exc)[:2000])


def main() -> None:
    dialect = sys.argv[1]
    events = [json.loads(line) for line in sys.stdin if line.strip()]
    if dialect == "ga":
        from openai.types.realtime import RealtimeServerEvent

        validate_each(events, RealtimeServerEvent, "ga")
        check_sessions(events)
        asyncio.run(through_agents(events))
    elif dialect == "beta":
        from openai.types.beta.realtime import RealtimeServerEvent as BetaServerEvent

        validate_each(events, BetaServerEvent, "beta")
    else:
        raise SystemExit(f"unknown dialect {dialect!r}: ga or beta")


if __name__ == "__main__":
    main()
