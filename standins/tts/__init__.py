"""Stand-ins for the TTS servers Hark streams from: OpenAI-style `/v1/audio/speech` (what
Kokoro-FastAPI serves), Fish Speech's `/v1/tts` and CosyVoice's FastAPI server.

Each one answers on the real server's routes with its fields, content types, audio format, streaming
and error shapes, but the voice is espeak-ng (`voice.py`), never a neural TTS: a cloned voice is
"spoken" by an espeak variant picked from the reference clip, so a test can hear that it arrived.
Timing is a latency model (first byte after `first_byte_ms`, then audio `speed` times faster than
real time). Every request is recorded, reference clip and transcript included, and faults can be
injected (refuse, HTTP errors, slow first byte, a stream cut mid-way), both over HTTP under
`/_standin/`. `python -m standins.tts {openai,fish,cosyvoice} --port 0`.
"""
