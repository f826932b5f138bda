"""How deep a JSON body nests, checked on its bytes before it is parsed (``http.max_json_depth``).

Why a limit: orjson parses up to 1,024 levels but writes at most 254 (``orjson.dumps`` raises "Recursion limit
reached" beyond), and the standard library's ``json`` (MLflow's NaN-tolerant fallback on ``/invocations``,
JSON-valued tags) raises RecursionError; code that walks a body (signature checks, prompt rendering, span
capture) recurses too. A body nested past ``http.max_json_depth`` is refused up front with a 400 naming the
setting, so nothing behind the check meets a body deeper than that.

Why on the bytes: the check runs on the hot paths (``/invocations``, the LLM proxy), so it must cost next to
nothing for an ordinary body. A body cannot nest deeper than its count of ``[`` and ``{``, so when that count
(two ``bytes.count`` calls) is within the limit, the check ends there: a typical 1 KB chat body holds about ten
brackets, and the check costs about 1.4 us where orjson takes about 1.9 us to parse that body (timeit).

Past that count, all in C, a few passes over the body: everything but brackets, quotes and escapes is dropped
(``bytes.translate``), then escaped backslashes and quotes, then pairs of adjacent quotes (a string without
brackets, or two strings with nothing between), then what is left between quotes. Up to 4,096 brackets, passes that
each remove the innermost pairs find the depth (one pass per level); beyond, numpy sums +1 per opening and -1 per
closing bracket within rows of 64, then over the rows: the depth is the highest running sum. Measured against
orjson's parse of the same body (timeit): a 33 KB conversation of 100 messages with newlines in its text about
1.6x, a 1.8 MB body of 100,000 rows about 0.17x; 32 MiB of brackets nested no more than the limit at a time (the
worst case) 0.2-0.6 s, less than orjson takes to parse 32 MiB of small arrays. Malformed JSON is measured as deep
as a parser would recurse before it fails (an unclosed ``[[[[...`` counts).
"""

from __future__ import annotations

from typing import Final

from gateway.errors import BadRequest

DEFAULT_MAX_JSON_DEPTH: Final = 64
# orjson.dumps refuses a value nested 255 levels deep: the most a body may nest and still be written back
# (to an upstream, a span, the store).
MOST_JSON_DEPTH: Final = 254
SETTING: Final = "http.max_json_depth"

_NOT_BRACKETS: Final = bytes(b for b in range(256) if b not in b"[]{}")
_NOT_MARKS: Final = bytes(b for b in range(256) if b not in b'[]{}"')
_ESCAPES: Final = b"\\bfnrtu/"  # a backslash and what may follow one in JSON, but the quote
_NOT_MARKS_OR_ESCAPES: Final = bytes(b for b in range(256) if b not in b'[]{}"' + _ESCAPES)
_AS_SQUARE: Final = bytes.maketrans(b"{}", b"[]")  # only the depth matters, not which kind of bracket
_FEW: Final = 4096  # brackets below which pair-removal passes beat numpy's fixed cost
_ROW: Final = 64  # brackets per row of the block sums: a running sum within a row fits an int8
_CHUNK: Final = _ROW * 16384  # brackets per numpy pass (bounds the temporaries to a few MiB)


def json_depth_exceeds(body: bytes, max_depth: int) -> bool:
    """Whether ``body`` (JSON text) nests arrays and objects more than ``max_depth`` levels deep."""
    if body.count(b"[") + body.count(b"{") <= max_depth:
        return False
    brackets = _brackets(body)
    if len(brackets) <= _FEW:
        deeper = _deeper_by_passes(brackets, max_depth)
        if deeper is not None:
            return deeper
    if b"[" * (max_depth + 1) in brackets:  # a run of openers past the limit: no need to sum
        return True
    return _max_depth(brackets) > max_depth


def _brackets(body: bytes) -> bytes:
    """The brackets of ``body`` outside its strings, in order, as ``[`` and ``]``."""
    if b'"' not in body:
        return body.translate(_AS_SQUARE, _NOT_BRACKETS)
    if b"\\" in body:
        # The escapes' letters stay, so that the text dropped cannot make \n" look like \"; escaped backslashes
        # go before escaped quotes (in "a\\" the quote ends the string), then the rest of the escapes.
        marks = body.translate(_AS_SQUARE, _NOT_MARKS_OR_ESCAPES)
        marks = marks.replace(b"\\\\", b"").replace(b'\\"', b"").translate(None, _ESCAPES)
    else:
        marks = body.translate(_AS_SQUARE, _NOT_MARKS)
    # Brackets and quotes only. Removing two adjacent quotes removes a string without brackets, or joins two
    # strings with nothing between them: either way no bracket moves in or out of a string, and most go.
    marks = marks.replace(b'""', b"")
    if b'"' not in marks:
        return marks
    return b"".join(marks.split(b'"')[::2])  # the pieces outside quotes


def _deeper_by_passes(brackets: bytes, max_depth: int) -> bool | None:
    """Each pass removes the innermost pairs ``[]``, one level: a body that nests ``n`` levels is gone after ``n``.
    None for unbalanced brackets: ``[[[[`` nests as deep as it goes before a parser fails, which passes do not
    see."""
    for _ in range(max_depth):
        fewer = brackets.replace(b"[]", b"")
        if len(fewer) == len(brackets):
            return None if fewer else False
        brackets = fewer
    return True if b"[]" in brackets else None


def _max_depth(brackets: bytes) -> int:
    """The highest running sum of +1 per ``[`` and -1 per ``]``: for unbalanced brackets too, at least the depth a
    parser reaches before it fails."""
    import numpy as np  # here: gateway.config imports this module's constants, and the CLI need not load numpy

    codes = np.frombuffer(brackets, dtype=np.uint8)
    deepest = depth = 0
    for start in range(0, len(codes), _CHUNK):
        chunk = codes[start : start + _CHUNK]
        steps = np.zeros(-(-len(chunk) // _ROW) * _ROW, dtype=np.int8)
        steps[: len(chunk)] = (chunk & 2).view(np.int8) - 1  # [ has bit 1 set, ] does not
        running = np.cumsum(steps.reshape(-1, _ROW), axis=1, dtype=np.int8)  # within each row of 64
        row_totals = running[:, -1].astype(np.int64)
        row_starts = depth + np.cumsum(row_totals) - row_totals
        deepest = max(deepest, int((row_starts + running.max(axis=1)).max()))
        depth += int(row_totals.sum())
    return deepest


def check_json_depth(body: bytes, max_depth: int) -> None:
    """Refuse (400, naming ``http.max_json_depth``) a body that nests deeper than ``max_depth``."""
    if json_depth_exceeds(body, max_depth):
        raise BadRequest(too_deep_message(max_depth))


def too_deep_message(max_depth: int) -> str:
    return f"Request body nests JSON arrays and objects deeper than {SETTING} ({max_depth} levels)."
