"""One assistant response: LLM deltas -> sentence chunks -> TTS -> PCM paced at real time.

When the model calls tools, the same reply goes on: the run's `ToolRunner` (tool_round.py) runs the
calls, and the model is asked again with its calls and their results, up to MAX_TOOL_ROUNDS times.
What the model said before a call is spoken while the call runs.

Three tasks joined by small bounded queues, so a slow stage holds back the one before it. The
pacer keeps at most `audio_lead_ms` of audio ahead of the client's playback clock and records
which text each stretch of audio carries, so a barge-in can keep exactly what was heard.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hark.protocol import Error, ErrorCode, ResponseAudioDone, ResponseAudioStarted, ResponseStatus, ResponseTextDelta

from .audio import resample_pcm16
from .context import Outbox, ServerContext
from .llm.base import LLMEngine, LLMRequest, LLMUnavailable, LLMUsage, Message, ToolCall
from .tool_round import MAX_TOOL_ROUNDS, ToolRunner, ToolTurnEnded, round_request_id
from .tts.base import Pcm16
from .tts.chunker import SentenceChunker
from .tts.streaming import StreamingTTSEngine, StreamResampler, TTSUnavailable, VoiceChoice
from .tts.voices import VoiceError

log = logging.getLogger(__name__)

_END = None  # queue sentinel
# spoken when the language model cannot answer, so a voice user is not left in silence
APOLOGY = "Sorry, I can't answer right now. Please try again in a moment."
# spoken when the model's tool use ended the turn (bad arguments twice, too many rounds)
TOOL_APOLOGY = "Sorry, something went wrong while I was working on that."


@dataclass(slots=True)
class SpokenChunk:
    text: str
    start_ms: float  # position on the response's audio clock
    duration_ms: float


@dataclass(frozen=True, slots=True)
class ToolExchange:
    """One finished tool round: the assistant's calls, their results, and what was spoken in it
    (the model's words before the calls, and the filler if one was said)."""

    assistant: Message
    results: tuple[Message, ...]
    spoken: str


@dataclass(slots=True)
class ResponseTimeline:
    """Wall times of what reached the client, for `response.done.metrics`."""

    first_token: float | None = None
    first_audio: float | None = None
    audio_sent_ms: float = 0.0
    audio_clock_start: float | None = None  # wall time that maps to audio position 0
    chunks: list[SpokenChunk] = field(default_factory=list)


class ResponseRun:
    """One reply of the assistant, from the LLM request to the last audio frame.

    The session creates one per answered turn, runs `run()` as the reply's task and cancels that
    task on barge-in, `response.cancel` or a newer turn; it is the only owner. While it runs, the
    session reads `timeline` (has audio started?) and sets `client_played_ms` from the client's
    `playback.position`; afterwards `text`, `heard_text()` and `record_done()` are what
    goes into `response.done` and the history. Used once: a new reply is a new run.
    """

    def __init__(
        self,
        ctx: ServerContext,
        outbox: Outbox,
        request: LLMRequest,
        response_id: str,
        output_sample_rate: int,
        voice: str,
        audio_output: bool,
    ) -> None:
        self._ctx = ctx
        self._outbox = outbox
        self._request = request
        self.response_id = response_id
        self._rate = output_sample_rate
        self._voice = voice
        self._audio_output = audio_output
        self.usage = LLMUsage()
        self.text = ""
        self.timeline = ResponseTimeline()
        self.client_played_ms: float | None = None
        self.failure: LLMUnavailable | None = None
        self.first_clause = True  # the chunker's first chunk may be a clause (bench/tts.py turns it off)
        self.llm: LLMEngine = ctx.llm  # where the words come from: the model, or a line of the server's own
        # the speech server failed: the rest of this reply goes out as text only
        self.tts_failure: TTSUnavailable | VoiceError | None = None
        self.tools: ToolRunner | None = None  # set by the session when the reply offers tools
        self.tool_failure: ToolTurnEnded | None = None
        self.exchanges: list[ToolExchange] = []  # the finished tool rounds, in order
        self._final_from = 0  # where in `text` the words after the last tool round start

    async def run(self) -> None:
        """Stream the whole response; raises on engine failure; cancel to interrupt."""
        chunks: asyncio.Queue[str | None] = asyncio.Queue(maxsize=4)
        audio: asyncio.Queue[tuple[str | None, Pcm16] | None] = asyncio.Queue(maxsize=2)
        tasks = [asyncio.create_task(self._generate(chunks), name=f"{self.response_id}-llm")]
        if self._audio_output:
            tasks.append(asyncio.create_task(self._synthesize(chunks, audio), name=f"{self.response_id}-tts"))
            tasks.append(asyncio.create_task(self._pace(audio), name=f"{self.response_id}-pace"))
        try:
            # first failure wins; the others are cancelled below
            for fut in asyncio.as_completed(tasks):
                await fut
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _generate(self, chunks: asyncio.Queue[str | None]) -> None:
        chunker = SentenceChunker(first_clause=self.first_clause)
        request = self._request
        try:
            for round_no in range(MAX_TOOL_ROUNDS + 1):
                round_start = len(self.text)
                calls = await self._stream_round(request, self.usage if round_no == 0 else LLMUsage(), chunker, chunks)
                if not calls:
                    break
                if self.tools is None:  # an engine calling tools nobody offered: nothing to run
                    log.warning(
                        "%s: the model called %d tool(s) though none were offered", self.response_id, len(calls)
                    )
                    break
                if round_no == MAX_TOOL_ROUNDS:
                    raise ToolTurnEnded(
                        ErrorCode.TOOL_ROUND_LIMIT, f"the model still called tools after {MAX_TOOL_ROUNDS} rounds"
                    )
                request = await self._run_tools(request, round_no, round_start, calls, chunker, chunks)
        except LLMUnavailable as exc:
            self.failure = exc
            await self._emit_text((" " if self.text else "") + APOLOGY, chunker, chunks)
        except ToolTurnEnded as exc:
            log.warning("%s: %s", self.response_id, exc.message)
            self.tool_failure = exc
            await self._emit_text((" " if self.text else "") + TOOL_APOLOGY, chunker, chunks)
        if self._audio_output:
            await self._flush(chunker, chunks)
            await chunks.put(_END)

    async def _stream_round(
        self, request: LLMRequest, usage: LLMUsage, chunker: SentenceChunker, chunks: asyncio.Queue[str | None]
    ) -> list[ToolCall]:
        """One LLM request: its text goes out as it comes; returns the tool calls it made."""
        calls: list[ToolCall] = []
        stream = self.llm.stream(request, usage)
        try:
            async for delta in stream:
                if isinstance(delta, ToolCall):
                    calls.append(delta)
                elif delta:
                    if usage is not self.usage and self.text and not (self.text[-1].isspace() or delta[0].isspace()):
                        delta = " " + delta  # a later round's words are a new sentence of the same reply
                    await self._emit_text(delta, chunker, chunks)
        finally:
            aclose = getattr(stream, "aclose", None)
            if aclose is not None:
                await aclose()
            if usage is not self.usage:
                self.usage.prompt_tokens += usage.prompt_tokens
                self.usage.cached_tokens += usage.cached_tokens
                self.usage.completion_tokens += usage.completion_tokens
        return calls

    async def _run_tools(
        self,
        request: LLMRequest,
        round_no: int,
        round_start: int,
        calls: list[ToolCall],
        chunker: SentenceChunker,
        chunks: asyncio.Queue[str | None],
    ) -> LLMRequest:
        """Run one round's calls; returns the request for the next round (calls and results added)."""
        tools = self.tools
        assert tools is not None
        if self._audio_output:
            await self._flush(chunker, chunks)  # what the model said before the calls is spoken now
        said = self.text[round_start:]
        filler = tools.setup.filler
        on_slow = None
        if filler and not said.strip() and not self.exchanges:  # once per reply, only into silence

            async def on_slow() -> None:
                await self._emit_text(filler, chunker, chunks)
                if self._audio_output:
                    await self._flush(chunker, chunks)

        calls = tools.normalize(calls)
        results = await tools.run(calls, on_slow)
        assistant = Message("assistant", said, tool_calls=tuple(calls))
        self.exchanges.append(ToolExchange(assistant, tuple(results), self.text[round_start:]))
        self._final_from = len(self.text)
        return dataclasses.replace(
            request,
            messages=[*request.messages, assistant, *results],
            request_id=round_request_id(self._request.request_id, round_no + 1),
            tool_choice=tools.setup.choice_for(round_no + 1),
        )

    @staticmethod
    async def _flush(chunker: SentenceChunker, chunks: asyncio.Queue[str | None]) -> None:
        for chunk in chunker.flush():
            await chunks.put(chunk)

    async def _emit_text(self, delta: str, chunker: SentenceChunker, chunks: asyncio.Queue[str | None]) -> None:
        if self.timeline.first_token is None:
            self.timeline.first_token = time.monotonic()
        self.text += delta
        self._outbox.send_event(ResponseTextDelta(response_id=self.response_id, delta=delta))
        if self._audio_output:
            for chunk in chunker.push(delta):
                await chunks.put(chunk)

    async def _synthesize(
        self, chunks: asyncio.Queue[str | None], audio: asyncio.Queue[tuple[str | None, Pcm16] | None]
    ) -> None:
        """Audio items are (text, pcm) for the start of a chunk and (None, pcm) for more of it."""
        tts = self._ctx.tts
        if isinstance(tts, StreamingTTSEngine):
            await self._stream_speech(tts, chunks, audio)
            return
        while (text := await chunks.get()) is not _END:
            started = time.monotonic()
            pcm = await tts.synthesize(text, self._voice)
            self._ctx.metrics.observe("tts_chunk", time.monotonic() - started)
            await audio.put((text, resample_pcm16(pcm, tts.sample_rate, self._rate)))
        await audio.put(_END)

    async def _stream_speech(
        self,
        tts: StreamingTTSEngine,
        chunks: asyncio.Queue[str | None],
        audio: asyncio.Queue[tuple[str | None, Pcm16] | None],
    ) -> None:
        """One request at a time, its audio passed on piece by piece as the server sends it; the next
        chunk waits in `chunks` meanwhile. A failure ends the speech of this reply, not the reply."""
        voice = VoiceChoice(self._voice)
        if tts.voices is not None:
            try:
                voice = await tts.voices.resolve(self._voice)
            except VoiceError as exc:
                self._speech_failed(exc)
        resampler = StreamResampler(self._rate)
        while (text := await chunks.get()) is not _END:
            if self.tts_failure is not None:
                continue  # keep taking chunks: the text must not wait on a queue nobody reads
            started = time.monotonic()
            label: str | None = text
            try:
                async with contextlib.aclosing(tts.stream(text, voice)) as pieces:
                    async for piece in pieces:
                        pcm = resampler.feed(piece)
                        if len(pcm):
                            await audio.put((label, pcm))
                            label = None
                tail = resampler.flush()
                if len(tail):
                    await audio.put((label, tail))
            except TTSUnavailable as exc:
                resampler.flush()
                self._speech_failed(exc)
            self._ctx.metrics.observe("tts_chunk", time.monotonic() - started)
        await audio.put(_END)

    def _speech_failed(self, exc: TTSUnavailable | VoiceError) -> None:
        self.tts_failure = exc
        code = exc.code if isinstance(exc, VoiceError) else ErrorCode.TTS_UNAVAILABLE
        log.warning("%s: speech failed, the reply goes on as text: %s", self.response_id, exc)
        self._ctx.metrics.errors.labels(code.value).inc()
        message = exc.message if isinstance(exc, VoiceError) else str(exc)
        self._outbox.send_event(Error(code=code.value, message=f"{message}; the reply goes on as text"))

    async def _pace(self, audio: asyncio.Queue[tuple[str | None, Pcm16] | None]) -> None:
        cfg = self._ctx.config
        frame_samples = self._rate * cfg.output_frame_ms // 1000
        frame_ms = frame_samples * 1000.0 / self._rate
        tl = self.timeline
        while (item := await audio.get()) is not _END:
            text, pcm = item
            if len(pcm) == 0:
                continue
            if tl.first_audio is None:
                self._outbox.send_event(
                    ResponseAudioStarted(response_id=self.response_id, sample_rate=self._rate, encoding="pcm_s16le")
                )
            if text is not None:
                tl.chunks.append(SpokenChunk(text, tl.audio_sent_ms, len(pcm) * 1000.0 / self._rate))
            elif tl.chunks:  # more audio of the chunk being spoken
                tl.chunks[-1].duration_ms += len(pcm) * 1000.0 / self._rate
            for offset in range(0, len(pcm), frame_samples):
                frame = pcm[offset : offset + frame_samples]
                now = time.monotonic()
                if tl.audio_clock_start is None:
                    tl.audio_clock_start = now
                    tl.first_audio = now
                played = (now - tl.audio_clock_start) * 1000.0
                if played > tl.audio_sent_ms:  # the client ran dry (TTS was late): re-base its clock
                    tl.audio_clock_start = now - tl.audio_sent_ms / 1000.0
                    played = tl.audio_sent_ms
                lead = tl.audio_sent_ms - played
                if lead + frame_ms > cfg.audio_lead_ms:
                    await asyncio.sleep((lead + frame_ms - cfg.audio_lead_ms) / 1000.0)
                self._outbox.send_audio(np.ascontiguousarray(frame, dtype="<i2").tobytes())
                tl.audio_sent_ms += len(frame) * 1000.0 / self._rate
        if tl.first_audio is not None:
            self._outbox.send_event(ResponseAudioDone(response_id=self.response_id, audio_ms=round(tl.audio_sent_ms)))

    def played_ms(self) -> float:
        """How much reply audio the client has played: its own report if any, else the pacing clock."""
        tl = self.timeline
        if tl.audio_clock_start is None:
            return 0.0
        estimate = min(tl.audio_sent_ms, (time.monotonic() - tl.audio_clock_start) * 1000.0)
        if self.client_played_ms is not None:
            return min(self.client_played_ms, tl.audio_sent_ms)
        return estimate

    def record_done(self, status: ResponseStatus, speech_end: float, final_ms: float | None) -> dict[str, Any]:
        """Count the finished reply in the server's metrics; return `response.done.metrics` (times
        from `speech_end`, the wall time the user stopped talking)."""
        tl = self.timeline

        def since_speech_end(t: float | None) -> int | None:
            return None if t is None else round((t - speech_end) * 1000.0)

        metrics: dict[str, Any] = {
            "final_ms": None if final_ms is None else round(final_ms),
            "first_token_ms": since_speech_end(tl.first_token),
            "first_audio_ms": since_speech_end(tl.first_audio),
            "prompt_tokens": self.usage.prompt_tokens,
            "cached_tokens": self.usage.cached_tokens,
            "completion_tokens": self.usage.completion_tokens,
            "speculative_prefills": self.usage.speculative_prefills,
            "speculative_aborted": self.usage.extra.get("speculative_aborted", 0),
            "audio_ms": round(tl.audio_sent_ms),
            "tool_ms": round(self.tools.tool_ms) if self.tools is not None else 0,
        }
        server = self._ctx.metrics
        if final_ms is not None:  # typed turns have no transcript to wait for
            server.observe("final", final_ms / 1000.0)
        for stage, value in (("first_token", metrics["first_token_ms"]), ("first_audio", metrics["first_audio_ms"])):
            if isinstance(value, int):
                server.observe(stage, value / 1000.0)
        server.responses.labels(status.value).inc()
        server.llm_tokens.labels("prompt").inc(self.usage.prompt_tokens)
        server.llm_tokens.labels("cached").inc(self.usage.cached_tokens)
        server.llm_tokens.labels("completion").inc(self.usage.completion_tokens)
        return metrics

    def conversation_messages(self, heard: str) -> list[Message]:
        """What this reply adds to the conversation after the user's message, given the text the
        user `heard`: each finished tool round (its calls happened, heard or not: the results stay,
        with the words of it that were heard), then the heard words after the last round."""
        if not self.exchanges:
            return [Message("assistant", heard)] if heard else []
        complete = heard == self.text
        words = heard.split()
        used = 0
        out: list[Message] = []
        for exchange in self.exchanges:
            assistant = exchange.assistant
            if not complete:
                n = len(exchange.spoken.split())
                assistant = dataclasses.replace(assistant, content=" ".join(words[used : used + n]))
                used += n
            out += [assistant, *exchange.results]
        final = self.text[self._final_from :].strip() if complete else " ".join(words[used:])
        if final and self.failure is None and self.tool_failure is None:  # an apology is not the model's
            out.append(Message("assistant", final))
        return out

    def heard_text(self) -> str:
        """The reply text the user heard before an interruption (all of it without audio output)."""
        if not self._audio_output:
            return self.text
        played = self.played_ms()
        words: list[str] = []
        for chunk in self.timeline.chunks:
            if played >= chunk.start_ms + chunk.duration_ms:
                words.extend(chunk.text.split())
            elif played > chunk.start_ms:
                chunk_words = chunk.text.split()
                fraction = (played - chunk.start_ms) / chunk.duration_ms
                words.extend(chunk_words[: int(len(chunk_words) * fraction)])
                break
            else:
                break
        return " ".join(words)
