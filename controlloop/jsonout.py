"""Fast JSON text for big documents (plans of thousands of servers), same text as ``json``.

``json.dumps(indent=2)`` took ~0.1 s for a 3,000-server plan (2.5 MB); orjson writes it in
a few ms. The text is what ``json.dumps(data, indent=2)`` gives (non-ASCII escaped as
``\\uXXXX``) with two exceptions: an exponent is written without a leading zero (``1e-7``
for ``1e-07``; the same number) and non-finite floats become ``null`` (``json`` writes
the invalid ``NaN``/``Infinity``).
"""

from __future__ import annotations

import codecs
import json
from typing import Any

import orjson


def _escape(err: UnicodeError) -> tuple[str, int]:
    """Codec error handler: non-ASCII characters as JSON ``\\uXXXX`` escapes."""
    assert isinstance(err, UnicodeEncodeError)
    out = []
    for char in err.object[err.start:err.end]:
        code = ord(char)
        if code < 0x10000:
            out.append(f"\\u{code:04x}")
        else:  # a UTF-16 surrogate pair, as json.dumps writes it
            code -= 0x10000
            out.append(f"\\u{0xD800 + (code >> 10):04x}\\u{0xDC00 + (code & 0x3FF):04x}")
    return "".join(out), err.end


codecs.register_error("controlloop-json-escape", _escape)


def dumps_indented(data: Any) -> str:
    """``json.dumps(data, indent=2)``, ~20x faster on big documents."""
    try:
        text = orjson.dumps(data, option=orjson.OPT_INDENT_2).decode()
    except TypeError:  # types or keys orjson does not take (e.g. int keys): the slow way
        return json.dumps(data, indent=2)
    if text.isascii():
        return text
    return text.encode("ascii", "controlloop-json-escape").decode("ascii")


def loads(text: str | bytes) -> Any:
    """Parse JSON; errors are :class:`json.JSONDecodeError` with ``json``'s message."""
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        # orjson's messages differ; re-parse for the standard message, line and column
        return json.loads(text)
