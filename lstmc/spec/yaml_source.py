"""Where each piece of a YAML spec stands in its file.

PyYAML's marks give a node's start; an expression's characters need more: this module maps
each character of a scalar's value back to its offset in the source text for every scalar
style (plain, quoted with escapes, folded over lines, `|`/`>` blocks), and a loader that
refuses every YAML tag the moment the scanner meets one. Used by `loader.py`.
"""

from __future__ import annotations

import yaml
from yaml.scanner import Scanner

_BREAKS = "\n\r\x85\u2028\u2029"  # YAML 1.1 line breaks, as PyYAML counts lines


class _TagFound(Exception):
    def __init__(self, token: yaml.Token):
        self.token = token


class _SpecLoader(yaml.SafeLoader):
    """PyYAML's safe loader, used only to compose nodes. It refuses every tag (`!!python/...`,
    `!foo`): a spec has no use for them, so none can ever reach a constructor. It also records
    where each scalar's own text starts (a node's start mark is at its anchor, if any)."""

    def __init__(self, text: str):
        super().__init__(text)
        self.scalar_starts: dict[int, yaml.Mark] = {}

    def get_token(self):
        token = super().get_token()
        if isinstance(token, yaml.TagToken):
            raise _TagFound(token)
        if isinstance(token, yaml.ScalarToken):
            self.scalar_starts[token.end_mark.index] = token.start_mark
        return token


def _advance(text: str, mark: yaml.Mark, index: int) -> tuple[int, int]:
    """The 0-based (line, column) of `text[index]`, counting from `mark` as PyYAML does."""
    line, col = mark.line, mark.column
    for i in range(mark.index, min(index, len(text))):
        ch = text[i]
        if ch in _BREAKS and not (ch == "\r" and text[i + 1 : i + 2] == "\n"):
            line, col = line + 1, 0
        elif ch != "\ufeff":  # PyYAML does not count a byte order mark as a column
            col += 1
    return line, col


def _escape(text: str, p: int) -> tuple[str | None, int]:
    """A double-quoted scalar's escape at `text[p] == "\\"`: (its character, its length), or
    (None, length) for an escaped line break, which stands for nothing."""
    ch = text[p + 1 : p + 2]
    if ch in Scanner.ESCAPE_REPLACEMENTS:
        return Scanner.ESCAPE_REPLACEMENTS[ch], 2
    if ch in Scanner.ESCAPE_CODES:
        n = Scanner.ESCAPE_CODES[ch]
        try:
            return chr(int(text[p + 2 : p + 2 + n], 16)), 2 + n
        except ValueError:
            return "", 1
    if ch and ch in _BREAKS:
        return None, 3 if text[p + 1 : p + 3] == "\r\n" else 2
    return "", 1


def _source_offsets(text: str, start: int, value: str, style: str | None) -> list[int]:
    """For each character of a scalar's `value`, the index in `text` it was read from.

    YAML only removes source characters (quotes, indentation, escapes' backslashes, block
    headers) or turns line breaks into spaces or newlines, so walking the source and the value
    side by side, skipping what YAML dropped, lines them up. Every non-blank character of the
    value, where tokens start, lands on its own source character."""
    p = start
    if style in ("|", ">"):  # the content starts on the line after the header (`|-2 # c`)
        while p < len(text) and text[p] not in _BREAKS:
            p += 1
    elif style in ("'", '"'):
        p += 1
    out: list[int] = []
    for c in value:
        while True:
            if p >= len(text):
                out.append(len(text))
                break
            r = text[p]
            if style == '"' and r == "\\":
                decoded, length = _escape(text, p)
                if decoded is None:  # an escaped line break: skip it
                    p += length
                    continue
                out.append(p)
                p += length
                break
            if r == c:
                out.append(p)
                p += 2 if (style == "'" and r == "'") else 1
                break
            if c in " \n" and r in _BREAKS:  # a folded line break
                out.append(p)
                p += 2 if text[p : p + 2] == "\r\n" else 1
                break
            if r in " \t" or r in _BREAKS:  # indentation, or trailing blanks YAML stripped
                p += 1
                continue
            out.append(p)  # cannot happen for what PyYAML produces; stay put, never fail
            break
    return out
