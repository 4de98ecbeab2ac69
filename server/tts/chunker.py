"""Cuts an LLM's streamed text into sentence-sized chunks that TTS can start speaking early."""

from __future__ import annotations

_TERMINALS = frozenset(".!?;:")
# CJK text has no space after its sentence punctuation, so these end a chunk by themselves.
_CJK_TERMINALS = frozenset("\N{IDEOGRAPHIC FULL STOP}\N{FULLWIDTH EXCLAMATION MARK}\N{FULLWIDTH QUESTION MARK}")
# Closing quotes and brackets stay with the sentence they close.
_CLOSERS = frozenset(
    "\"')]}"
    "\N{RIGHT DOUBLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}\N{RIGHT-POINTING DOUBLE ANGLE QUOTATION MARK}"
    "\N{RIGHT CORNER BRACKET}\N{RIGHT WHITE CORNER BRACKET}"
    "\N{FULLWIDTH RIGHT PARENTHESIS}\N{RIGHT BLACK LENTICULAR BRACKET}"
)
_OPENERS = (
    "\"'([{"
    "\N{LEFT DOUBLE QUOTATION MARK}\N{LEFT SINGLE QUOTATION MARK}\N{LEFT-POINTING DOUBLE ANGLE QUOTATION MARK}"
    "\N{LEFT CORNER BRACKET}\N{LEFT WHITE CORNER BRACKET}"
    "\N{FULLWIDTH LEFT PARENTHESIS}\N{LEFT BLACK LENTICULAR BRACKET}"
)
# Lower-cased tokens whose final "." does not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "prof.",
        "sr.",
        "jr.",
        "st.",
        "mt.",
        "vs.",
        "e.g.",
        "i.e.",
        "cf.",
        "approx.",
        "no.",
        "fig.",
        "inc.",
        "ltd.",
        "co.",
        "corp.",
        "u.s.",
        "a.m.",
        "p.m.",
    }
)
_FIRST_CHUNK_MIN_WORDS = 4
# CJK clause commas end the first chunk without a space after them, once this many characters precede
_CJK_COMMAS = frozenset("\N{FULLWIDTH COMMA}\N{IDEOGRAPHIC COMMA}")
_FIRST_CHUNK_MIN_CJK_CHARS = 6


class SentenceChunker:
    """Feed it text deltas with `push`; call `flush` at the end of the stream for the remainder.

    A chunk ends after . ! ? ; : followed by whitespace, or right after the CJK full stop,
    exclamation or question mark (closing quotes and brackets are kept with it). Decimals ("3.5")
    and common abbreviations ("Dr.", "e.g.") do not end a chunk. With `first_clause` (the default)
    the first chunk of a stream also ends at its first clause: ", " once it has 4 words, or a CJK
    comma after 6 characters, so the TTS starts speaking while the LLM writes the rest of the
    sentence (bench/tts.py measures what it saves). A chunk longer than `max_chars` is cut at its
    last whitespace. Chunks are stripped and never empty. After `flush` the chunker is ready for
    the next stream.
    """

    def __init__(self, max_chars: int = 200, *, first_clause: bool = True) -> None:
        if max_chars < 1:
            raise ValueError("max_chars must be positive")
        self.max_chars = max_chars
        self.first_clause = first_clause
        self._buf = ""
        self._first = True

    def push(self, delta: str) -> list[str]:
        self._buf += delta
        return self._drain(final=False)

    def flush(self) -> list[str]:
        chunks = self._drain(final=True)
        rest = self._buf.strip()
        if rest:
            chunks.append(rest)
        self._buf = ""
        self._first = True
        return chunks

    def _drain(self, *, final: bool) -> list[str]:
        chunks: list[str] = []
        while True:
            self._buf = self._buf.lstrip()
            end = self._find_boundary(final)
            if end is not None and end <= self.max_chars:
                cut = end
            elif len(self._buf) > self.max_chars:
                cut = self._overflow_cut()
            else:
                return chunks
            chunk = self._buf[:cut].strip()
            self._buf = self._buf[cut:]
            if chunk:
                chunks.append(chunk)
                self._first = False

    def _overflow_cut(self) -> int:
        """Where to cut a buffer longer than max_chars: after its last whitespace within the limit."""
        limit = self.max_chars
        for i in range(limit, 0, -1):
            if self._buf[i].isspace():
                return i
        return limit  # one unbroken run of characters (a URL, CJK without punctuation): cut it hard

    def _find_boundary(self, final: bool) -> int | None:
        """The end index of the first complete chunk in the buffer, or None if there is none yet.

        Scanning stops at a possible boundary whose next character has not arrived yet, since that
        character decides it ("3." then "5" is a decimal).
        """
        buf = self._buf
        n = len(buf)
        # Nothing past max_chars can end a chunk that fits, so a huge delta is not rescanned per chunk.
        for i in range(min(n, self.max_chars)):
            ch = buf[i]
            if ch in _CJK_TERMINALS:
                j = self._skip_closers(i + 1)
                if j == n and not final:
                    return None  # a closing quote may still follow
                return j
            clause = self._first and self.first_clause
            if clause and ch in _CJK_COMMAS:
                if len(buf[:i].strip()) >= _FIRST_CHUNK_MIN_CJK_CHARS:
                    return i + 1
                continue
            comma = ch == "," and clause
            if ch not in _TERMINALS and not comma:
                continue
            j = self._skip_closers(i + 1)
            if j == n:
                return None if not final else (j if not comma else None)
            if not buf[j].isspace():
                continue
            if comma:
                if len(buf[:i].split()) >= _FIRST_CHUNK_MIN_WORDS:
                    return j
            elif ch != "." or not self._dot_continues(i):
                return j
        return None

    def _skip_closers(self, j: int) -> int:
        # Runs like "?!", "..." and '."' end together.
        while j < len(self._buf) and (self._buf[j] in _CLOSERS or self._buf[j] in _TERMINALS):
            j += 1
        return j

    def _dot_continues(self, i: int) -> bool:
        """True if the "." at `i` belongs to an abbreviation, an initial or a list number, not a sentence end."""
        start = i
        while start > 0 and not self._buf[start - 1].isspace():
            start -= 1
        token = self._buf[start : i + 1].lstrip(_OPENERS)
        if token.lower() in _ABBREVIATIONS:
            return True
        if len(token) == 2 and token[0].isupper():
            return True  # an initial, as in "J. R. R. Tolkien"
        # "1. Preheat the oven" at the start of a chunk is a list item, not a one-word sentence.
        return start == 0 and token[:-1].isdigit()
