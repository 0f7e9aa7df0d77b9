"""Label and field selectors, parsed like the API server does.

Grammar (k8s.io/apimachinery/pkg/labels)::

    selector    := requirement ("," requirement)*
    requirement := ["!"] KEY
                 | KEY ("=" | "==" | "!=") VALUE?
                 | KEY ("in" | "notin") "(" [VALUE ("," VALUE)*] ")"
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any


class SelectorError(ValueError):
    """Unparsable selector; the server answers 400 BadRequest."""


_TOKEN = re.compile(r"\s*(?:(?P<op>==|!=|=|\(|\)|,|!)|(?P<word>[A-Za-z0-9_./-]+))")
_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")


@dataclass(frozen=True)
class Requirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        has = self.key in labels
        val = labels.get(self.key)
        if self.op == "exists":
            return has
        if self.op == "!exists":
            return not has
        if self.op in ("=", "in"):
            return has and val in self.values
        # "!=" and "notin" match objects that lack the key, as in Kubernetes.
        return not has or val not in self.values


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise SelectorError(f"unexpected character at {pos} in {text!r}")
        out.append(("op", m["op"]) if m["op"] else ("word", m["word"]))
        pos = m.end()
    return out


def parse_label_selector(text: str | None) -> list[Requirement]:
    """Parse ``text`` into requirements (all must match); empty selects everything."""
    toks = _tokens(text or "")
    reqs: list[Requirement] = []
    i = 0

    def peek(k: int = 0) -> tuple[str, str]:
        return toks[i + k] if i + k < len(toks) else ("end", "")

    def key(tok: tuple[str, str]) -> str:
        if tok[0] != "word" or not _KEY.match(tok[1]):
            raise SelectorError(f"invalid label key {tok[1]!r} in {text!r}")
        return tok[1]

    def value(tok: tuple[str, str]) -> str:
        if tok[0] != "word" or not _VALUE.match(tok[1]):
            raise SelectorError(f"invalid label value {tok[1]!r} in {text!r}")
        return tok[1]

    while i < len(toks):
        if peek() == ("op", "!"):
            reqs.append(Requirement(key(peek(1)), "!exists"))
            i += 2
        else:
            k = key(peek())
            i += 1
            nxt = peek()
            if nxt[0] in ("end",) or nxt == ("op", ","):
                reqs.append(Requirement(k, "exists"))
            elif nxt[0] == "op" and nxt[1] in ("=", "==", "!="):
                i += 1
                # An empty value is legal: "tier=" selects tier set to "".
                if peek()[0] == "word":
                    v = value(peek())
                    i += 1
                else:
                    v = ""
                reqs.append(Requirement(k, "!=" if nxt[1] == "!=" else "=", (v,)))
            elif nxt[0] == "word" and nxt[1] in ("in", "notin"):
                i += 1
                if peek() != ("op", "("):
                    raise SelectorError(f"expected '(' after {nxt[1]} in {text!r}")
                i += 1
                vals: list[str] = []
                while peek() != ("op", ")"):
                    if peek()[0] == "end":
                        raise SelectorError(f"unclosed '(' in {text!r}")
                    vals.append(value(peek()))
                    i += 1
                    if peek() == ("op", ","):
                        i += 1
                i += 1
                reqs.append(Requirement(k, nxt[1], tuple(vals)))
            else:
                raise SelectorError(f"unexpected {nxt[1]!r} after {k!r} in {text!r}")
        if i < len(toks):
            if peek() != ("op", ","):
                raise SelectorError(f"expected ',' at token {i} in {text!r}")
            i += 1
            if i == len(toks):
                raise SelectorError(f"trailing ',' in {text!r}")
    return reqs


def match_labels(reqs: list[Requirement], labels: Mapping[str, str] | None) -> bool:
    return all(r.matches(labels or {}) for r in reqs)


def parse_field_selector(text: str | None) -> list[tuple[str, str, str]]:
    """``a.b=v,c!=w`` into (path, op, value) triples; only = / == / != exist for fields."""
    out: list[tuple[str, str, str]] = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        m = re.fullmatch(r"([A-Za-z0-9_.]+)\s*(==|!=|=)\s*(.*)", part)
        if not m:
            raise SelectorError(f"invalid field selector {part!r}")
        out.append((m[1], "!=" if m[2] == "!=" else "=", m[3]))
    return out


def match_fields(reqs: list[tuple[str, str, str]], obj: Mapping[str, Any]) -> bool:
    for path, op, want in reqs:
        cur: Any = obj
        for part in path.split("."):
            cur = cur.get(part) if isinstance(cur, Mapping) else None
        got = "" if cur is None else str(cur)
        if (got == want) != (op == "="):
            return False
    return True
