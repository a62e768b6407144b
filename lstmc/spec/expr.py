"""The restricted expression language of spec equations.

Grammar (Python's precedence, `@` binding like `*`):

    expr    := term (("+" | "-") term)*
    term    := unary (("*" | "/" | "@") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | NAME | NAME "(" [expr ("," expr)*] ")" | "(" expr ")"

Numbers are decimal floats (`2`, `0.5`, `.5`, `1e-5`, `3E+2`). Nothing here ever reaches
`eval`: the parser builds a small AST, and anything outside the grammar (attribute access,
subscripts, strings, lambdas, keywords, dunder names, `**`) is a SpecError at its column.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

from lstmc.errors import Location, SpecError

NUMBER_RE = re.compile(r"(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_NAME_RE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_OPERATORS = "+-*/@(),"
_DIGITS = "0123456789"
_NAME_START = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz_"
_NUMBER_TAIL = re.compile(r"[0-9A-Za-z_.]+")
# Parentheses, calls and unary minus nest at most this deep, and an expression tree is at most
# MAX_DEPTH operations tall: deeper expressions would exhaust Python's stack in the recursive
# parser and lowering. Nobody writes such an equation by hand; split it instead.
MAX_DEPTH = 100


@dataclass(frozen=True)
class Num:
    value: float
    loc: Location


@dataclass(frozen=True)
class Name:
    id: str
    loc: Location


@dataclass(frozen=True)
class Neg:
    operand: Expr
    loc: Location


@dataclass(frozen=True)
class BinOp:
    op: str  # one of + - * / @
    lhs: Expr
    rhs: Expr
    loc: Location


@dataclass(frozen=True)
class Call:
    func: str
    args: tuple
    loc: Location


Expr = Num | Name | Neg | BinOp | Call


def identifier_problem(name: str) -> str | None:
    """Why `name` is not an acceptable identifier, or None if it is."""
    if not _NAME_RE.fullmatch(name):
        return f"`{name}` is not an identifier (a letter or `_` followed by letters, digits, `_`)"
    if name.startswith("__"):
        return f"`{name}`: names starting with `__` are not allowed"
    if name in _PYTHON_KEYWORDS:
        return f"`{name}` is a Python keyword and can't be used as a name"
    if name in _SOFT_KEYWORDS:
        return f"`{name}` is a Python soft keyword and can't be used as a name"
    return None


# Fixed lists, not the running Python's `keyword` module, so that a spec is accepted or refused
# alike on every Python lstmc supports: 3.12 made `type` a soft keyword.
_PYTHON_KEYWORDS = frozenset(
    "False None True and as assert async await break class continue def del elif else except "
    "finally for from global if import in is lambda nonlocal not or pass raise return try "
    "while with yield".split()
)
_SOFT_KEYWORDS = frozenset({"_", "case", "match", "type"})


@dataclass(frozen=True)
class _Token:
    kind: str  # "num" | "name" | "op" | "end"
    text: str
    offset: int


def _char_text(ch: str) -> str:
    """A character as an error message shows it: `c`, or U+XXXX when it is invisible."""
    code = f"U+{ord(ch):04X}"
    if ch.isprintable() and not ch.isspace():
        return f"`{ch}`" if ch.isascii() else f"`{ch}` ({code})"
    return code


def _explain_bad_char(text: str, i: int) -> str:
    ch = text[i]
    if ch == ".":
        return "attribute access (`.`) is not allowed in an equation"
    if ch in "[]":
        return "subscripts (`[...]`) are not allowed in an equation"
    if ch in "'\"":
        return "strings are not allowed in an equation"
    if ch == "*" and text[i : i + 2] == "**":
        return "`**` is not supported; use exp/log or repeated `*`"
    if ch in "=<>!":
        return f"`{ch}`: comparisons and assignments are not allowed in an equation"
    if ch in "{}":
        return "`{`/`}`: dicts and sets are not allowed in an equation"
    if ch == ":":
        return "`:` is not allowed in an equation (lambdas and slices are not part of the language)"
    if not ch.isascii() and (ch.isalnum() or ch == "_"):
        return f"unexpected character {_char_text(ch)}: names and numbers are ASCII"
    return f"unexpected character {_char_text(ch)}"


def tokenize(text: str, where: Callable[[int], Location]) -> list[_Token]:
    tokens: list[_Token] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch in " \t\n\r\f\v":
            i += 1
            continue
        if ch in _DIGITS or (ch == "." and text[i + 1 : i + 2] in tuple(_DIGITS)):
            m = NUMBER_RE.match(text, i)
            end = m.end()
            if end < len(text) and not text[end].isascii() and text[end].isalnum():
                raise SpecError(_explain_bad_char(text, end), where(end))
            if end < len(text) and (text[end].isalnum() or text[end] in "_."):
                bad = _NUMBER_TAIL.match(text, i).group(0)
                raise SpecError(
                    f"invalid number `{bad}` (numbers are decimal, like 2, 0.5, .5, 1e-5)",
                    where(i),
                )
            tokens.append(_Token("num", m.group(0), i))
            i = end
            continue
        if ch in _NAME_START:
            m = _NAME_RE.match(text, i)
            end = m.end()
            if end < len(text) and not text[end].isascii() and text[end].isalnum():
                raise SpecError(_explain_bad_char(text, end), where(end))
            tokens.append(_Token("name", m.group(0), i))
            i = end
            continue
        if ch == "*" and text[i : i + 2] == "**":
            raise SpecError(_explain_bad_char(text, i), where(i))
        if ch in _OPERATORS:
            tokens.append(_Token("op", ch, i))
            i += 1
            continue
        raise SpecError(_explain_bad_char(text, i), where(i))
    tokens.append(_Token("end", "", len(text)))
    return tokens


class _Parser:
    def __init__(self, text: str, where: Callable[[int], Location]):
        self.text = text
        self.where = where
        self.tokens = tokenize(text, where)
        self.pos = 0
        self.depth = 0  # open parentheses, calls and unary minuses around the current token

    def peek(self) -> _Token:
        return self.tokens[self.pos]

    def take(self) -> _Token:
        tok = self.tokens[self.pos]
        self.pos += 1
        return tok

    def error(self, message: str, tok: _Token) -> SpecError:
        return SpecError(message, self.where(tok.offset))

    def enter(self, tok: _Token) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(_too_deep(), tok)

    def expect(self, op: str) -> _Token:
        tok = self.peek()
        if tok.kind != "op" or tok.text != op:
            if tok.kind in ("name", "num"):
                raise self.error(f"expected an operator or `{op}` before `{tok.text}`", tok)
            found = "the end of the expression" if tok.kind == "end" else f"`{tok.text}`"
            raise self.error(f"expected `{op}` but found {found}", tok)
        return self.take()

    def parse(self) -> Expr:
        if self.peek().kind == "end":
            raise self.error("empty expression", self.peek())
        expr = self.expr()
        tok = self.peek()
        if tok.kind != "end":
            if tok.kind in ("name", "num"):
                raise self.error(f"expected an operator before `{tok.text}`", tok)
            raise self.error(f"unexpected `{tok.text}`", tok)
        _check_height(expr)
        return expr

    def expr(self) -> Expr:
        node = self.term()
        while self.peek().kind == "op" and self.peek().text in "+-":
            tok = self.take()
            node = BinOp(tok.text, node, self.term(), self.where(tok.offset))
        return node

    def term(self) -> Expr:
        node = self.unary()
        while self.peek().kind == "op" and self.peek().text in "*/@":
            tok = self.take()
            node = BinOp(tok.text, node, self.unary(), self.where(tok.offset))
        return node

    def unary(self) -> Expr:
        tok = self.peek()
        if tok.kind == "op" and tok.text == "-":
            self.take()
            self.enter(tok)
            operand = self.unary()
            self.depth -= 1
            return Neg(operand, self.where(tok.offset))
        if tok.kind == "op" and tok.text == "+":
            raise self.error("unary `+` is not supported; drop it", tok)
        return self.atom()

    def atom(self) -> Expr:
        tok = self.take()
        if tok.kind == "num":
            value = float(tok.text)
            if math.isinf(value):
                raise self.error(f"the number `{tok.text}` is too large for a float", tok)
            return Num(value, self.where(tok.offset))
        if tok.kind == "name":
            problem = identifier_problem(tok.text)
            if problem:
                raise self.error(problem, tok)
            nxt = self.peek()
            if nxt.kind == "op" and nxt.text == "(":
                self.enter(self.take())
                args: list[Expr] = []
                if not (self.peek().kind == "op" and self.peek().text == ")"):
                    args.append(self.expr())
                    while self.peek().kind == "op" and self.peek().text == ",":
                        self.take()
                        args.append(self.expr())
                self.expect(")")
                self.depth -= 1
                return Call(tok.text, tuple(args), self.where(tok.offset))
            return Name(tok.text, self.where(tok.offset))
        if tok.kind == "op" and tok.text == "(":
            self.enter(tok)
            if self.peek().kind == "op" and self.peek().text == ")":
                raise self.error("empty parentheses `()`", tok)
            inner = self.expr()
            self.expect(")")
            self.depth -= 1
            return inner
        if tok.kind == "end":
            raise self.error("the expression ends too early", tok)
        raise self.error(f"expected a name, a number or `(` but found `{tok.text}`", tok)


def _too_deep() -> str:
    return (
        f"the expression nests more than {MAX_DEPTH} levels deep; split it into several equations"
    )


def _children(e: Expr) -> tuple:
    if isinstance(e, Neg):
        return (e.operand,)
    if isinstance(e, BinOp):
        return (e.lhs, e.rhs)
    if isinstance(e, Call):
        return e.args
    return ()


def _check_height(root: Expr) -> None:
    """Reject an expression tree taller than MAX_DEPTH (long `a + b + c + ...` chains nest
    to the left), at the leftmost node below that height. Iterative, so any height is safe."""
    stack = [(root, 1)]
    while stack:
        e, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise SpecError(
                f"the expression is more than {MAX_DEPTH} operations tall: a chain such as "
                f"`a + b + c + ...` of more than {MAX_DEPTH} terms is, since each operator "
                "applies to the result of the ones before it; split it into several equations",
                e.loc,
            )
        stack.extend((c, depth + 1) for c in reversed(_children(e)))  # leftmost first


def parse_expr(text: str, where: Callable[[int], Location]) -> Expr:
    """Parse one equation's right-hand side. `where(offset)` maps a character offset to a
    location in the spec file."""
    return _Parser(text, where).parse()


def parse_number(text: str, loc: Location) -> float:
    """Parse a number in the spec's decimal notation (used for `constants:`): an optional sign
    and a decimal float, nothing else (no hex, no `_`, no inf or nan)."""
    t = text.strip()
    sign = -1.0 if t.startswith("-") else 1.0
    body = t[1:] if t[:1] in "+-" else t
    if not NUMBER_RE.fullmatch(body):
        raise SpecError(f"invalid number `{t}` (numbers are decimal, like 2, 0.5, .5, 1e-5)", loc)
    value = float(body)
    if math.isinf(value):
        raise SpecError(f"the number `{t}` is too large for a float", loc)
    return sign * value
