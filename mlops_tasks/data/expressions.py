"""The spec's expression language: SQL expressions over a batch's columns, evaluated column-wise.

A spec derives columns (`data.derive`), its target (`target: {expr: ...}`) and the rows it is
about (`data.scope`) with expressions written as a SQL `SELECT` list item would be, e.g.

    arr_delay > 15
    CASE WHEN dep_hour < 6 THEN 'night' WHEN dep_hour < 18 THEN 'day' ELSE 'evening' END
    "Study Name" || '-' || "Individual ID"
    dayofweek(event_time)

The grammar and the semantics are DuckDB's (three-valued NULL logic, `/` is true division,
`dayofweek` counts from Sunday = 0, `round` rounds half away from zero, `||` is NULL when
either side is, `concat` skips NULLs). Every number with a fraction is a DOUBLE, literals too
(DuckDB reads `2.5` as a DECIMAL), so `CAST(2.5 AS INTEGER)` is 2 (half to even, as DuckDB
casts a DOUBLE; DuckDB's DECIMAL gives 3); `tests/unit/test_expressions.py` checks them against
DuckDB itself on generated expressions. Where DuckDB would raise an error or give an infinity
for a value a batch may well hold, an expression gives NULL instead, so one odd row is a
missing value and not a failed run: division and modulo by zero, `ln`/`log10` of a number
<= 0, `sqrt` of a negative number.

Only the parts listed here exist: literals, column names (a bare name matches a column of that
name, else the one column whose name differs only in case; `"quoted names"` match exactly),
arithmetic `+ - * / // %`, comparisons, `AND OR NOT`, `IS [NOT] NULL`, `[NOT] BETWEEN`,
`[NOT] IN (...)`, `[NOT] LIKE / ILIKE 'pattern'`, `||`, `CASE`, `CAST`/`TRY_CAST` and the
functions in `FUNCTIONS`. No subqueries, no tables, no Python: the expression is parsed here
and evaluated with numpy, so nothing in a spec can reach a file, a network or an interpreter.
One code path evaluates it wherever rows are read (batches for training and monitoring,
requests at serving), so a derived column cannot differ between training and serving.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
else:

    class _Numpy:
        """numpy, imported on first use: specs parse their expressions when a DAG file is
        parsed, which must not pay for importing numpy."""

        def __getattr__(self, name: str) -> Any:
            import numpy

            return getattr(numpy, name)

    np = _Numpy()

#: Bounds on one expression: its text, its nodes and its nesting.
MAX_LENGTH = 4_096
MAX_NODES = 1_000
MAX_DEPTH = 64


class ExpressionError(ValueError):
    """An expression that does not parse, or cannot be evaluated on the rows it was given.

    `position` is the 1-based character offset in the expression the error is about (None
    when it is about the rows, e.g. a missing column found only at evaluation)."""

    def __init__(self, message: str, position: int | None = None, text: str | None = None):
        self.message = message
        self.position = position
        where = f" at position {position}" if position is not None else ""
        excerpt = ""
        if text is not None and position is not None:
            start = max(0, position - 31)
            snippet = text[start : position + 30].replace("\n", " ")
            excerpt = f"\n    {snippet}\n    {' ' * (position - 1 - start)}^"
        super().__init__(f"{message}{where}{excerpt}")


# --- tokens ------------------------------------------------------------------------------

KEYWORDS = frozenset(
    [
        "AND",
        "OR",
        "NOT",
        "IS",
        "NULL",
        "TRUE",
        "FALSE",
        "CASE",
        "WHEN",
        "THEN",
        "ELSE",
        "END",
        "CAST",
        "TRY_CAST",
        "AS",
        "IN",
        "BETWEEN",
        "LIKE",
        "ILIKE",
    ]
)
_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<str>'(?:[^']|'')*')
  | (?P<qid>"(?:[^"]|"")+")
  | (?P<id>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op>\|\||//|<=|>=|<>|!=|::|[-+*/%=<>(),])
    """,
    re.VERBOSE,
)


@dataclass(frozen=True)
class Token:
    kind: str  # num, str, qid, id, kw, op, end
    text: str
    pos: int  # 1-based


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    while i < len(text):
        m = _TOKEN.match(text, i)
        if m is None:
            what = "an unterminated quote" if text[i] in "'\"" else f"unexpected {text[i]!r}"
            raise ExpressionError(what, i + 1, text)
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "id" and value.upper() in KEYWORDS:
                kind, value = "kw", value.upper()
            tokens.append(Token(kind, value, i + 1))
        i = m.end()
    tokens.append(Token("end", "", len(text) + 1))
    return tokens


# --- syntax tree -------------------------------------------------------------------------


@dataclass(frozen=True)
class Node:
    op: str  # lit, col, neg, not, bin, cmp, and, or, isnull, in, like, case, cast, call
    pos: int
    args: tuple[Node, ...] = ()
    value: Any = None  # a literal's value, a column's name, an operator, a type, a function

    def walk(self) -> list[Node]:
        out = [self]
        for a in self.args:
            out.extend(a.walk())
        return out


@dataclass(frozen=True)
class Expression:
    """A parsed expression: its text, its tree and the column names it reads."""

    text: str
    tree: Node

    @property
    def columns(self) -> list[str]:
        """The column names the expression reads, in order of first use."""
        seen: dict[str, None] = {}
        for n in self.tree.walk():
            if n.op == "col":
                seen.setdefault(n.value[0], None)
        return list(seen)

    def evaluate(self, frame: pd.DataFrame) -> pd.Series:
        """The expression's value for every row of `frame`, as a pandas Series."""
        import pandas as pd

        out = _Eval(frame, self.text).run(self.tree)
        return pd.Series(out.to_pandas(), index=frame.index)


TYPES = {
    "INTEGER": "int",
    "INT": "int",
    "BIGINT": "int",
    "DOUBLE": "float",
    "FLOAT": "float",
    "REAL": "float",
    "NUMERIC": "float",
    "DECIMAL": "float",
    "VARCHAR": "str",
    "TEXT": "str",
    "STRING": "str",
    "BOOLEAN": "bool",
    "BOOL": "bool",
    "TIMESTAMP": "time",
    "DATE": "date",
}


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0
        self.nodes = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def fail(self, message: str, tok: Token | None = None) -> ExpressionError:
        tok = tok or self.tok
        return ExpressionError(message, tok.pos, self.text)

    def take(self, kind: str, text: str | None = None) -> Token | None:
        t = self.tok
        if t.kind == kind and (text is None or t.text == text):
            self.i += 1
            return t
        return None

    def expect(self, kind: str, text: str, what: str | None = None) -> Token:
        t = self.take(kind, text)
        if t is None:
            raise self.fail(f"expected {what or repr(text)}, found {self.describe()}")
        return t

    def describe(self, tok: Token | None = None) -> str:
        t = tok or self.tok
        return "the end of the expression" if t.kind == "end" else repr(t.text)

    def node(self, op: str, pos: int, *args: Node, value: Any = None) -> Node:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise ExpressionError(f"more than {MAX_NODES} terms", pos, self.text)
        return Node(op, pos, tuple(args), value)

    def parse(self) -> Node:
        if not self.text.strip():
            raise ExpressionError("the expression is empty")
        tree = self.expr()
        if self.tok.kind != "end":
            raise self.fail(f"unexpected {self.describe()} after a complete expression")
        return tree

    def expr(self) -> Node:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.fail(f"nested more than {MAX_DEPTH} levels deep")
        try:
            return self.or_()
        finally:
            self.depth -= 1

    def or_(self) -> Node:
        left = self.and_()
        while t := self.take("kw", "OR"):
            left = self.node("or", t.pos, left, self.and_())
        return left

    def and_(self) -> Node:
        left = self.not_()
        while t := self.take("kw", "AND"):
            left = self.node("and", t.pos, left, self.not_())
        return left

    def not_(self) -> Node:
        if t := self.take("kw", "NOT"):
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"nested more than {MAX_DEPTH} levels deep", t)
            try:
                return self.node("not", t.pos, self.not_())
            finally:
                self.depth -= 1
        return self.predicate()

    def predicate(self) -> Node:
        left = self.concat()
        while True:
            t = self.tok
            if t.kind == "op" and t.text in ("=", "<>", "!=", "<", "<=", ">", ">="):
                self.i += 1
                op = "<>" if t.text == "!=" else t.text
                left = self.node("cmp", t.pos, left, self.concat(), value=op)
            elif t.kind == "kw" and t.text == "IS":
                self.i += 1
                negate = self.take("kw", "NOT") is not None
                self.expect("kw", "NULL", "NULL after IS" + (" NOT" if negate else ""))
                left = self.node("isnull", t.pos, left, value=negate)
            elif t.kind == "kw" and (
                t.text in ("BETWEEN", "IN", "LIKE", "ILIKE")
                or (
                    t.text == "NOT"
                    and self.tokens[self.i + 1].text in ("BETWEEN", "IN", "LIKE", "ILIKE")
                )
            ):
                negate = self.take("kw", "NOT") is not None
                kw = self.tok
                self.i += 1
                if kw.text == "BETWEEN":
                    low = self.concat()
                    self.expect("kw", "AND", "AND in BETWEEN ... AND ...")
                    high = self.concat()
                    node = self.node(
                        "and",
                        kw.pos,
                        self.node("cmp", kw.pos, left, low, value=">="),
                        self.node("cmp", kw.pos, left, high, value="<="),
                    )
                elif kw.text == "IN":
                    self.expect("op", "(", "'(' after IN")
                    items = [self.expr()]
                    while self.take("op", ","):
                        items.append(self.expr())
                    self.expect("op", ")", "')' closing the IN list")
                    node = self.node("in", kw.pos, left, *items)
                else:
                    pattern = self.take("str")
                    if pattern is None:
                        raise self.fail(
                            f"{kw.text} needs a quoted pattern, found {self.describe()}"
                        )
                    node = self.node(
                        "like", kw.pos, left, value=(_unquote(pattern.text), kw.text == "ILIKE")
                    )
                left = self.node("not", kw.pos, node) if negate else node
            else:
                return left

    def concat(self) -> Node:
        left = self.additive()
        while t := self.take("op", "||"):
            left = self.node("bin", t.pos, left, self.additive(), value="||")
        return left

    def additive(self) -> Node:
        left = self.term()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            t = self.tok
            self.i += 1
            left = self.node("bin", t.pos, left, self.term(), value=t.text)
        return left

    def term(self) -> Node:
        left = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/", "//", "%"):
            t = self.tok
            self.i += 1
            left = self.node("bin", t.pos, left, self.unary(), value=t.text)
        return left

    def unary(self) -> Node:
        t = self.tok
        if t.kind == "op" and t.text in ("-", "+"):
            self.i += 1
            self.depth += 1
            if self.depth > MAX_DEPTH:
                raise self.fail(f"nested more than {MAX_DEPTH} levels deep", t)
            try:
                inner = self.unary()
            finally:
                self.depth -= 1
            return self.node("neg", t.pos, inner) if t.text == "-" else inner
        return self.postfix()

    def postfix(self) -> Node:
        node = self.primary()
        while t := self.take("op", "::"):
            node = self.node("cast", t.pos, node, value=(self.type_name(), False))
        return node

    def type_name(self) -> str:
        t = self.tok
        if t.kind not in ("id", "kw") or t.text.upper() not in TYPES:
            raise self.fail(f"unknown type {self.describe()}; allowed: {', '.join(sorted(TYPES))}")
        self.i += 1
        return TYPES[t.text.upper()]

    def primary(self) -> Node:
        t = self.tok
        if t.kind == "num":
            self.i += 1
            is_int = re.fullmatch(r"\d+", t.text) is not None
            value: Any = int(t.text) if is_int else float(t.text)
            if is_int and value > 2**63 - 1:
                raise self.fail(f"the integer {t.text[:30]} is too large", t)
            if not is_int and not math.isfinite(value):
                raise self.fail(f"the number {t.text[:30]} is too large", t)
            return self.node("lit", t.pos, value=value)
        if t.kind == "str":
            self.i += 1
            return self.node("lit", t.pos, value=_unquote(t.text))
        if t.kind == "qid":
            self.i += 1
            return self.node("col", t.pos, value=(t.text[1:-1].replace('""', '"'), True))
        if t.kind == "kw":
            if t.text in ("TRUE", "FALSE", "NULL"):
                self.i += 1
                lit = {"TRUE": True, "FALSE": False, "NULL": None}[t.text]
                return self.node("lit", t.pos, value=lit)
            if t.text == "CASE":
                return self.case()
            if t.text in ("CAST", "TRY_CAST"):
                self.i += 1
                self.expect("op", "(", f"'(' after {t.text}")
                inner = self.expr()
                self.expect("kw", "AS", "AS and a type")
                kind = self.type_name()
                self.expect("op", ")", f"')' closing {t.text}")
                return self.node("cast", t.pos, inner, value=(kind, t.text == "TRY_CAST"))
            raise self.fail(f"unexpected keyword {t.text}")
        if t.kind == "id" and t.text.upper() in _STATEMENT_WORDS:
            raise self.fail(
                f"{t.text.upper()}: queries and subqueries are not part of an expression; "
                "write a value over the row's columns"
            )
        if t.kind == "id":
            self.i += 1
            literal = self.tok
            if t.text.upper() in ("TIMESTAMP", "DATE") and literal.kind == "str":
                self.i += 1  # a typed literal: TIMESTAMP '2024-01-01 00:00:00'
                value = self.node("lit", literal.pos, value=_unquote(literal.text))
                kind = TYPES[t.text.upper()]
                return self.node("cast", t.pos, value, value=(kind, False))
            if self.take("op", "("):
                name = t.text.lower()
                if name not in FUNCTIONS:
                    close = _close(name, FUNCTIONS)
                    raise self.fail(f"unknown function {t.text!r}{close}", t)
                args: list[Node] = []
                if not self.take("op", ")"):
                    args.append(self.expr())
                    while self.take("op", ","):
                        args.append(self.expr())
                    self.expect("op", ")", f"')' closing {t.text}(")
                lo, hi = FUNCTIONS[name].arity
                if not lo <= len(args) <= hi:
                    want = str(lo) if lo == hi else f"{lo} to {hi}" if hi < 99 else f"{lo} or more"
                    raise self.fail(f"{name}() takes {want} argument(s), got {len(args)}", t)
                return self.node("call", t.pos, *args, value=name)
            return self.node("col", t.pos, value=(t.text, False))
        if t.kind == "op" and t.text == "(":
            self.i += 1
            inner = self.expr()
            self.expect("op", ")", "')'")
            return inner
        raise self.fail(f"expected a value, a column or '(', found {self.describe()}")

    def case(self) -> Node:
        start = self.expect("kw", "CASE")
        at = self.tok
        subject = None if at.kind == "kw" and at.text in ("WHEN", "END") else self.expr()
        arms: list[Node] = []
        while w := self.take("kw", "WHEN"):
            cond = self.expr()
            if subject is not None:
                cond = self.node("cmp", w.pos, subject, cond, value="=")
            self.expect("kw", "THEN", "THEN")
            arms.extend([cond, self.expr()])
        if not arms:
            raise self.fail("CASE needs at least one WHEN ... THEN ...")
        otherwise = self.expr() if self.take("kw", "ELSE") else self.node("lit", start.pos)
        self.expect("kw", "END", "END closing CASE")
        return self.node("case", start.pos, *arms, otherwise)


#: SQL words that start a statement or a clause: never a column name without quotes.
_STATEMENT_WORDS = frozenset(
    [
        "SELECT",
        "FROM",
        "WHERE",
        "WITH",
        "UNION",
        "JOIN",
        "GROUP",
        "ORDER",
        "LIMIT",
        "INSERT",
        "UPDATE",
        "DELETE",
        "CREATE",
        "DROP",
        "ALTER",
        "ATTACH",
        "COPY",
        "PRAGMA",
        "INSTALL",
        "LOAD",
        "SET",
        "CALL",
        "EXPORT",
        "IMPORT",
    ]
)


def _unquote(text: str) -> str:
    return text[1:-1].replace("''", "'")


def _close(name: str, known: dict[str, Any]) -> str:
    import difflib

    match = difflib.get_close_matches(name, list(known), n=1, cutoff=0.6)
    if match:
        return f"; did you mean {match[0]!r}?"
    names = sorted(known)
    more = f" and {len(names) - 20} more" if len(names) > 20 else ""
    return f"; known: {', '.join(names[:20])}{more}"


def parse(text: str) -> Expression:
    """Parse `text`; an ExpressionError names what is wrong and where."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {type(text).__name__}")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"longer than {MAX_LENGTH} characters")
    return Expression(text, _Parser(text).parse())


# --- values ------------------------------------------------------------------------------


@dataclass
class _V:
    """A column of values: `kind` num/bool/str/time/null, the values and where they are NULL."""

    kind: str
    data: np.ndarray
    null: np.ndarray

    def to_pandas(self) -> Any:
        import pandas as pd

        n = len(self.data)
        if self.kind == "num":
            if self.data.dtype.kind == "i" and not self.null.any():
                return self.data
            out = self.data.astype("float64")
            out[self.null] = np.nan
            return out
        if self.kind == "bool":
            if not self.null.any():
                return self.data.astype(bool)
            return pd.array(
                [None if m else bool(v) for v, m in zip(self.data, self.null, strict=True)],
                dtype="boolean",
            )
        if self.kind == "time":
            out = self.data.astype("datetime64[ns]")
            out[self.null] = np.datetime64("NaT")
            return out
        if self.kind == "null":
            return np.full(n, np.nan)
        out = self.data.astype(object)
        out[self.null] = None
        return out


_KIND_NAMES = {"num": "a number", "bool": "a boolean", "str": "text", "time": "a timestamp"}


def _from_series(values: pd.Series, name: str, where: int, text: str) -> _V:
    import pandas as pd

    n = len(values)
    if isinstance(values.dtype, pd.CategoricalDtype):
        values = values.astype(object)
    if pd.api.types.is_bool_dtype(values.dtype):
        null = values.isna().to_numpy()
        return _V("bool", values.fillna(False).to_numpy(dtype=bool), null)
    if pd.api.types.is_integer_dtype(values.dtype):
        null = values.isna().to_numpy()
        return _V("num", values.fillna(0).to_numpy(dtype="int64"), null)
    if pd.api.types.is_float_dtype(values.dtype):
        data = values.to_numpy(dtype="float64", na_value=np.nan)
        return _V("num", np.where(np.isfinite(data), data, 0.0), ~np.isfinite(data))
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        if isinstance(values.dtype, pd.DatetimeTZDtype):
            values = values.dt.tz_convert("UTC").dt.tz_localize(None)
        data = values.to_numpy(dtype="datetime64[ns]")
        return _V("time", data, np.isnat(data))
    null = values.isna().to_numpy()
    present = values[~null]
    inferred = pd.api.types.infer_dtype(present, skipna=True) if len(present) else "empty"
    if inferred in ("integer", "floating", "mixed-integer-float", "decimal"):
        data = pd.to_numeric(values, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        return _V("num", np.nan_to_num(data), np.isnan(data))
    if inferred == "boolean":
        flags = np.array([bool(v) and not m for v, m in zip(values, null, strict=True)], bool)
        return _V("bool", flags, null)
    if inferred in ("datetime", "datetime64", "date"):
        data = pd.to_datetime(values, errors="coerce").to_numpy(dtype="datetime64[ns]")
        return _V("time", data, np.isnat(data))
    if inferred == "empty":
        return _V("null", np.zeros(n), np.ones(n, dtype=bool))
    data = np.array(["" if m else str(v) for v, m in zip(values, null, strict=True)], dtype=object)
    return _V("str", data, null)


def _lit(value: Any, n: int) -> _V:
    none = np.zeros(n, dtype=bool)
    if value is None:
        return _V("null", np.zeros(n), np.ones(n, dtype=bool))
    if isinstance(value, bool):
        return _V("bool", np.full(n, value), none)
    if isinstance(value, int):
        return _V("num", np.full(n, value, dtype="int64"), none)
    if isinstance(value, float):
        return _V("num", np.full(n, value, dtype="float64"), none)
    return _V("str", np.full(n, value, dtype=object), none)


@dataclass(frozen=True)
class Function:
    arity: tuple[int, int]
    apply: Callable[[_Eval, Node, list[_V]], _V]


def _np(name: str) -> Callable[..., np.ndarray]:
    """numpy's `name`, looked up when called (see `_Numpy`)."""
    return getattr(np, name)


def _num(v: _V) -> np.ndarray:
    return v.data.astype("float64")


class _Eval:
    def __init__(self, frame: pd.DataFrame, text: str):
        self.frame = frame
        self.text = text
        self.n = len(frame)
        self.lower: dict[str, list[str]] = {}
        for c in frame.columns:
            self.lower.setdefault(str(c).lower(), []).append(str(c))

    def fail(self, message: str, node: Node) -> ExpressionError:
        return ExpressionError(message, node.pos, self.text)

    def want(self, v: _V, kinds: tuple[str, ...], node: Node, what: str) -> _V:
        """`v` itself when it is of one of `kinds`; a NULL literal becomes that kind."""
        if v.kind == "null":
            kind = kinds[0]
            zero = {"num": 0.0, "bool": False, "str": "", "time": np.datetime64(0, "ns")}[kind]
            return _V(kind, np.full(self.n, zero, dtype=None if kind != "str" else object), v.null)
        if v.kind not in kinds:
            wanted = " or ".join(_KIND_NAMES[k] for k in kinds)
            raise self.fail(f"{what} needs {wanted}, got {_KIND_NAMES[v.kind]}", node)
        return v

    def run(self, node: Node) -> _V:
        op = node.op
        a = node.args
        if op == "lit":
            return _lit(node.value, self.n)
        if op == "col":
            return self.column(node)
        if op == "neg":
            v = self.want(self.run(a[0]), ("num",), node, "'-'")
            return _V("num", -v.data, v.null)
        if op == "not":
            v = self.want(self.run(a[0]), ("bool",), node, "NOT")
            return _V("bool", ~v.data, v.null)
        if op in ("and", "or"):
            x = self.want(self.run(a[0]), ("bool",), node, op.upper())
            y = self.want(self.run(a[1]), ("bool",), node, op.upper())
            return _and(x, y) if op == "and" else _or(x, y)
        if op == "isnull":
            v = self.run(a[0])
            return _V("bool", ~v.null if node.value else v.null.copy(), np.zeros(self.n, bool))
        if op == "cmp":
            return self.compare(node, self.run(a[0]), self.run(a[1]))
        if op == "bin":
            return self.binary(node, self.run(a[0]), self.run(a[1]))
        if op == "in":
            subject = self.run(a[0])
            out = _lit(False, self.n)
            for item in a[1:]:
                out = _or(out, self.compare(item, subject, self.run(item), "="))
            return out
        if op == "like":
            return self.like(node, self.run(a[0]))
        if op == "case":
            return self.case(node)
        if op == "cast":
            kind, lenient = node.value
            return self.cast(node, self.run(a[0]), kind, lenient)
        if op == "call":
            return FUNCTIONS[node.value].apply(self, node, [self.run(x) for x in a])
        raise AssertionError(op)  # pragma: no cover - the parser makes no other node

    def column(self, node: Node) -> _V:
        name, quoted = node.value
        columns = self.frame.columns
        if name not in columns:
            matches = [] if quoted else self.lower.get(name.lower(), [])
            if len(matches) != 1:
                close = _close(name, {str(c): None for c in columns}) if len(columns) else ""
                if len(matches) > 1:
                    close = f"; it matches {matches} apart from case: quote the one you mean"
                raise self.fail(f"no column {name!r} in the rows{close}", node)
            name = matches[0]
        return _from_series(self.frame[name], name, node.pos, self.text)

    def compare(self, node: Node, x: _V, y: _V, op: str | None = None) -> _V:
        op = op or node.value
        if x.kind == "null" and y.kind == "null":
            return _V("bool", np.zeros(self.n, bool), np.ones(self.n, bool))
        if x.kind == "null":
            x = self.want(x, (y.kind,), node, "a comparison")
        if y.kind == "null":
            y = self.want(y, (x.kind,), node, "a comparison")
        if x.kind == "time" and y.kind == "str":
            y = self.cast(node, y, "time", False)
        elif y.kind == "time" and x.kind == "str":
            x = self.cast(node, x, "time", False)
        if x.kind != y.kind:
            raise self.fail(
                f"cannot compare {_KIND_NAMES[x.kind]} with {_KIND_NAMES[y.kind]} (CAST one)",
                node,
            )
        p, q = x.data, y.data
        if x.kind == "num":
            p, q = _num(x), _num(y)
        elif x.kind == "str":
            p, q = p.astype(str), q.astype(str)
        result = {
            "=": np.equal,
            "<>": np.not_equal,
            "<": np.less,
            "<=": np.less_equal,
            ">": np.greater,
            ">=": np.greater_equal,
        }[op](p, q)
        return _V("bool", np.asarray(result, dtype=bool), x.null | y.null)

    def binary(self, node: Node, x: _V, y: _V) -> _V:
        op = node.value
        null = x.null | y.null
        if op == "||":
            x = self.as_text(node, x)
            y = self.as_text(node, y)
            return _V(
                "str",
                np.array([p + q for p, q in zip(x.data, y.data, strict=True)], dtype=object),
                null,
            )
        x = self.want(x, ("num",), node, f"{op!r}")
        y = self.want(y, ("num",), node, f"{op!r}")
        ints = x.data.dtype.kind == "i" and y.data.dtype.kind == "i"
        with np.errstate(all="ignore"):
            if op == "/":
                q = _num(y)
                zero = q == 0
                out = _num(x) / np.where(zero, 1.0, q)
                return _V("num", np.where(zero, 0.0, out), null | zero)
            if op in ("//", "%"):
                zero = y.data == 0
                safe = np.where(zero, 1, y.data)
                if op == "%":
                    out = np.fmod(x.data, safe)
                else:
                    # DuckDB's integer division truncates toward zero, as `%` does
                    whole = np.abs(x.data) // np.abs(safe) if ints else np.trunc(_num(x) / safe)
                    out = whole * np.sign(x.data) * np.sign(safe) if ints else whole
                return _V("num", np.where(zero, 0, out), null | zero)
            f = {"+": np.add, "-": np.subtract, "*": np.multiply}[op]
            if ints:
                check = f(_num(x), _num(y))
                big = np.abs(np.where(null, 0.0, check)) >= 2.0**63
                if big.any():
                    raise self.fail(f"integer overflow in {op!r} (CAST to DOUBLE first)", node)
                return _V("num", f(x.data, y.data), null)
            return _V("num", f(_num(x), _num(y)), null)

    def as_text(self, node: Node, v: _V) -> _V:
        return v if v.kind == "str" else self.cast(node, v, "str", False)

    def like(self, node: Node, v: _V) -> _V:
        pattern, insensitive = node.value
        v = self.want(v, ("str",), node, "LIKE")
        regex = "".join(
            ".*" if ch == "%" else "." if ch == "_" else re.escape(ch) for ch in pattern
        )
        compiled = re.compile(regex, re.DOTALL | (re.IGNORECASE if insensitive else 0))
        out = np.array([compiled.fullmatch(s) is not None for s in v.data], dtype=bool)
        return _V("bool", out, v.null)

    def case(self, node: Node) -> _V:
        args = node.args
        pairs = [(args[i], args[i + 1]) for i in range(0, len(args) - 1, 2)]
        results = [self.run(r) for _, r in pairs] + [self.run(args[-1])]
        kinds = {r.kind for r in results} - {"null"}
        if len(kinds) > 1:
            raise self.fail(
                "CASE branches give different types: "
                + ", ".join(sorted(_KIND_NAMES[k] for k in kinds)),
                node,
            )
        kind = kinds.pop() if kinds else "null"
        results = [self.want(r, (kind,), node, "CASE") if kind != "null" else r for r in results]
        out = results[-1]
        data, null = out.data.copy(), out.null.copy()
        if kind == "num" and any(r.data.dtype.kind == "f" for r in results):
            data = data.astype("float64")
        decided = np.zeros(self.n, bool)
        for (cond_node, _), r in zip(pairs, results, strict=False):
            cond = self.want(self.run(cond_node), ("bool",), cond_node, "WHEN")
            take = cond.data & ~cond.null & ~decided
            data = np.where(take, r.data, data) if kind != "str" else _pick(take, r.data, data)
            null = np.where(take, r.null, null)
            decided |= take
        return _V(kind, data, null)

    def cast(self, node: Node, v: _V, kind: str, lenient: bool) -> _V:
        import pandas as pd

        if v.kind == "null":
            return self.want(
                v,
                ("num" if kind in ("int", "float") else "time" if kind == "date" else kind,),
                node,
                "CAST",
            )
        if kind in ("int", "float"):
            if v.kind == "num":
                data = _num(v)
            elif v.kind == "bool":
                data = v.data.astype("float64")
            elif v.kind == "str":
                parsed = pd.to_numeric(pd.Series(v.data).str.strip(), errors="coerce").to_numpy(
                    dtype="float64", na_value=np.nan
                )
                bad = np.isnan(parsed) & ~v.null
                if bad.any() and not lenient:
                    raise self.fail(
                        f"cannot CAST {_show(v.data[bad][0])} to a number (TRY_CAST gives NULL)",
                        node,
                    )
                return self.cast(
                    node, _V("num", np.nan_to_num(parsed), v.null | bad), kind, lenient
                )
            else:
                raise self.fail(f"cannot CAST {_KIND_NAMES[v.kind]} to a number", node)
            if kind == "float":
                return _V("num", data, v.null)
            rounded = np.rint(data)  # half to even, as DuckDB casts a DOUBLE
            big = (np.abs(rounded) >= 2.0**63) & ~v.null
            if big.any():
                if not lenient:
                    raise self.fail("value out of range for INTEGER", node)
                return _V("num", np.where(big, 0, rounded).astype("int64"), v.null | big)
            return _V("num", np.where(v.null, 0, rounded).astype("int64"), v.null)
        if kind == "str":
            if v.kind == "str":
                return v
            if v.kind == "bool":
                return _V("str", np.where(v.data, "true", "false").astype(object), v.null)
            if v.kind == "time":
                text = pd.Series(v.data).dt.strftime("%Y-%m-%d %H:%M:%S").to_numpy(dtype=object)
                return _V("str", np.where(v.null, "", text).astype(object), v.null)
            if v.data.dtype.kind == "i":
                return _V("str", v.data.astype(str).astype(object), v.null)
            return _V("str", np.array([_float_text(x) for x in v.data], dtype=object), v.null)
        if kind == "bool":
            if v.kind == "bool":
                return v
            if v.kind == "num":
                return _V("bool", _num(v) != 0, v.null)
            if v.kind == "str":
                low = np.array([s.strip().lower() for s in v.data], dtype=object)
                true = np.isin(low, ["true", "t", "1", "yes", "y"])
                false = np.isin(low, ["false", "f", "0", "no", "n"])
                bad = ~(true | false) & ~v.null
                if bad.any() and not lenient:
                    raise self.fail(f"cannot CAST {_show(v.data[bad][0])} to BOOLEAN", node)
                return _V("bool", true, v.null | bad)
            raise self.fail("cannot CAST a timestamp to BOOLEAN", node)
        # time and date
        if v.kind == "time":
            data = v.data
        elif v.kind == "str":
            stamps: Any = pd.to_datetime(
                pd.Series(v.data).where(~v.null), errors="coerce", format="mixed"
            )
            if getattr(stamps.dt, "tz", None) is not None:
                stamps = stamps.dt.tz_convert("UTC").dt.tz_localize(None)
            data = stamps.to_numpy(dtype="datetime64[ns]")
            bad = np.isnat(data) & ~v.null
            if bad.any() and not lenient:
                raise self.fail(f"cannot CAST {_show(v.data[bad][0])} to a timestamp", node)
            v = _V("time", data, v.null | bad)
        else:
            raise self.fail(f"cannot CAST {_KIND_NAMES[v.kind]} to a timestamp", node)
        if kind == "date":
            data = data.astype("datetime64[D]").astype("datetime64[ns]")
        return _V("time", np.where(v.null, np.datetime64(0, "ns"), data), v.null)


def _pick(take: np.ndarray, new: np.ndarray, old: np.ndarray) -> np.ndarray:
    out = old.copy()
    out[take] = new[take]
    return out


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:40] + "...'"


def _float_text(x: float) -> str:
    """A double as DuckDB prints it: shortest round-trip digits, `1.0` for whole numbers."""
    text = repr(float(x))
    if "e" in text:
        mantissa, exp = text.split("e")
        sign = "-" if exp.startswith("-") else "+"
        return f"{mantissa.removesuffix('.0')}e{sign}{exp.lstrip('+-').zfill(2)}"
    return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(text, text)


def _and(x: _V, y: _V) -> _V:
    false = (~x.data & ~x.null) | (~y.data & ~y.null)
    null = ~false & (x.null | y.null)
    return _V("bool", x.data & y.data & ~null, null)


def _or(x: _V, y: _V) -> _V:
    true = (x.data & ~x.null) | (y.data & ~y.null)
    return _V("bool", true, ~true & (x.null | y.null))


# --- functions ---------------------------------------------------------------------------


def _unary_math(
    f: Callable[[np.ndarray], np.ndarray], valid: Callable[[np.ndarray], np.ndarray] | None = None
) -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        v = ev.want(args[0], ("num",), node, f"{node.value}()")
        x = _num(v)
        ok = valid(x) if valid else np.ones(len(x), bool)
        with np.errstate(all="ignore"):
            out = f(np.where(ok, x, 1.0))
        return _V("num", np.where(ok, out, 0.0), v.null | ~ok)

    return apply


def _keep_int(f: Callable[[np.ndarray], np.ndarray]) -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        v = ev.want(args[0], ("num",), node, f"{node.value}()")
        return _V("num", v.data if v.data.dtype.kind == "i" else f(v.data), v.null)

    return apply


def _round(ev: _Eval, node: Node, args: list[_V]) -> _V:
    v = ev.want(args[0], ("num",), node, "round()")
    digits = 0
    if len(args) > 1:
        d = node.args[1]
        if d.op != "lit" or not isinstance(d.value, int) or isinstance(d.value, bool):
            raise ev.fail("round()'s second argument must be a whole number", d)
        digits = max(-18, min(18, d.value))
    if v.data.dtype.kind == "i" and digits >= 0:
        return v
    scale = 10.0**digits
    x = _num(v)
    with np.errstate(all="ignore"):
        out = np.sign(x) * np.floor(np.abs(x) * scale + 0.5) / scale
    return _V("num", np.where(np.isfinite(out), out, x), v.null)


def _abs(ev: _Eval, node: Node, args: list[_V]) -> _V:
    v = ev.want(args[0], ("num",), node, "abs()")
    return _V("num", np.abs(v.data), v.null)


def _sign(ev: _Eval, node: Node, args: list[_V]) -> _V:
    v = ev.want(args[0], ("num",), node, "sign()")
    return _V("num", np.sign(v.data).astype("int64"), v.null)


def _power(ev: _Eval, node: Node, args: list[_V]) -> _V:
    x = ev.want(args[0], ("num",), node, "power()")
    y = ev.want(args[1], ("num",), node, "power()")
    with np.errstate(all="ignore"):
        out = np.power(_num(x), _num(y))
    bad = ~np.isfinite(out)
    return _V("num", np.where(bad, 0.0, out), x.null | y.null | bad)


def _extreme(pick: Callable[..., np.ndarray]) -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        kinds = {a.kind for a in args} - {"null"}
        if len(kinds) > 1:
            raise ev.fail(f"{node.value}() needs arguments of one type", node)
        kind = kinds.pop() if kinds else "null"
        if kind == "null":
            return args[0]
        vals = [ev.want(a, (kind,), node, f"{node.value}()") for a in args]
        if kind == "num":
            stack = np.vstack([np.where(a.null, np.nan, _num(a)) for a in vals])
            import warnings

            with np.errstate(all="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # a row of NULLs only: NULL
                out = pick(stack, axis=0)
            null = np.isnan(out)
            ints = all(a.data.dtype.kind == "i" for a in vals)
            data = np.where(null, 0, out)
            return _V("num", data.astype("int64") if ints else data, null)
        if kind == "time":
            stack = np.vstack([np.where(a.null, np.datetime64("NaT"), a.data) for a in vals])
            out = pick(stack.astype("datetime64[ns]"), axis=0)
            return _V("time", np.where(np.isnat(out), np.datetime64(0, "ns"), out), np.isnat(out))
        raise ev.fail(f"{node.value}() needs numbers or timestamps", node)

    return apply


def _coalesce(ev: _Eval, node: Node, args: list[_V]) -> _V:
    kinds = {a.kind for a in args} - {"null"}
    if len(kinds) > 1:
        raise ev.fail("coalesce() needs arguments of one type", node)
    kind = kinds.pop() if kinds else "null"
    if kind == "null":
        return args[0]
    vals = [ev.want(a, (kind,), node, "coalesce()") for a in args]
    out, null = vals[-1].data.copy(), vals[-1].null.copy()
    if kind == "num" and any(a.data.dtype.kind == "f" for a in vals):
        out = out.astype("float64")
    for a in reversed(vals[:-1]):
        take = ~a.null
        out = _pick(take, a.data, out) if kind == "str" else np.where(take, a.data, out)
        null = null & a.null
    return _V(kind, out, null)


def _nullif(ev: _Eval, node: Node, args: list[_V]) -> _V:
    same = ev.compare(node, args[0], args[1], "=")
    hit = same.data & ~same.null
    return _V(args[0].kind, args[0].data, args[0].null | hit)


def _text(f: Callable[[str], Any], kind: str = "str") -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        v = ev.want(args[0], ("str",), node, f"{node.value}()")
        out = [f(s) for s in v.data]
        return _V(kind, np.array(out, dtype=object if kind == "str" else "int64"), v.null)

    return apply


def _substr(ev: _Eval, node: Node, args: list[_V]) -> _V:
    s = ev.want(args[0], ("str",), node, "substr()")
    start = ev.want(args[1], ("num",), node, "substr()")
    length = ev.want(args[2], ("num",), node, "substr()") if len(args) > 2 else None
    out = []
    for i, text in enumerate(s.data):
        b = int(start.data[i])
        size = len(text)
        # DuckDB: 1-based; 0 counts as before the first character; negative from the end
        first = b - 1 if b > 0 else (size + b if b < 0 else -1)
        last = size if length is None else first + int(length.data[i])
        lo, hi = max(first, 0), max(min(last, size), 0)
        out.append(text[lo:hi] if hi > lo else "")
    null = s.null | start.null | (length.null if length is not None else False)
    return _V("str", np.array(out, dtype=object), null)


def _concat(ev: _Eval, node: Node, args: list[_V]) -> _V:
    parts = [ev.as_text(node, a) if a.kind != "null" else a for a in args]
    out = []
    for i in range(ev.n):
        out.append("".join(p.data[i] for p in parts if p.kind != "null" and not p.null[i]))
    return _V("str", np.array(out, dtype=object), np.zeros(ev.n, bool))


def _replace(ev: _Eval, node: Node, args: list[_V]) -> _V:
    s, old, new = (ev.want(a, ("str",), node, "replace()") for a in args)
    out = [a.replace(b, c) for a, b, c in zip(s.data, old.data, new.data, strict=True)]
    return _V("str", np.array(out, dtype=object), s.null | old.null | new.null)


def _string_test(f: Callable[[str, str], bool]) -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        s, t = (ev.want(a, ("str",), node, f"{node.value}()") for a in args)
        out = np.array([f(a, b) for a, b in zip(s.data, t.data, strict=True)], dtype=bool)
        return _V("bool", out, s.null | t.null)

    return apply


def _part(f: Callable[[Any], Any]) -> Callable[[_Eval, Node, list[_V]], _V]:
    def apply(ev: _Eval, node: Node, args: list[_V]) -> _V:
        import pandas as pd

        v = args[0]
        if v.kind == "str":
            v = ev.cast(node, v, "time", False)
        v = ev.want(v, ("time",), node, f"{node.value}()")
        times = pd.Series(np.where(v.null, np.datetime64(0, "ns"), v.data).astype("datetime64[ns]"))
        out = np.asarray(f(times.dt), dtype="float64")
        return _V("num", out.astype("int64"), v.null)

    return apply


def _epoch(ev: _Eval, node: Node, args: list[_V]) -> _V:
    v = args[0]
    if v.kind == "str":
        v = ev.cast(node, v, "time", False)
    v = ev.want(v, ("time",), node, "epoch()")
    seconds = v.data.astype("datetime64[ns]").astype("int64") / 1e9
    return _V("num", np.where(v.null, 0.0, seconds), v.null)


def _date_diff(ev: _Eval, node: Node, args: list[_V]) -> _V:
    unit_node = node.args[0]
    if unit_node.op != "lit" or not isinstance(unit_node.value, str):
        raise ev.fail(
            "date_diff()'s first argument is a quoted unit: 'day', 'hour', ...", unit_node
        )
    unit = unit_node.value.lower().removesuffix("s")
    scale = {"day": 86_400, "hour": 3_600, "minute": 60, "second": 1}.get(unit)
    if scale is None:
        raise ev.fail(
            f"unknown unit {unit_node.value!r}; allowed: day, hour, minute, second", unit_node
        )
    a, b = (ev.cast(node, x, "time", False) if x.kind == "str" else x for x in args[1:])
    a = ev.want(a, ("time",), node, "date_diff()")
    b = ev.want(b, ("time",), node, "date_diff()")
    # DuckDB counts unit boundaries crossed: truncate both to the unit first
    step = np.timedelta64(scale, "s").astype("timedelta64[ns]").astype("int64")
    ta = np.floor_divide(a.data.astype("datetime64[ns]").astype("int64"), step)
    tb = np.floor_divide(b.data.astype("datetime64[ns]").astype("int64"), step)
    return _V("num", (tb - ta).astype("int64"), a.null | b.null)


FUNCTIONS: dict[str, Function] = {
    "abs": Function((1, 1), _abs),
    "sign": Function((1, 1), _sign),
    "round": Function((1, 2), _round),
    "floor": Function((1, 1), _keep_int(_np("floor"))),
    "ceil": Function((1, 1), _keep_int(_np("ceil"))),
    "sqrt": Function((1, 1), _unary_math(_np("sqrt"), lambda x: x >= 0)),
    "ln": Function((1, 1), _unary_math(_np("log"), lambda x: x > 0)),
    "log10": Function((1, 1), _unary_math(_np("log10"), lambda x: x > 0)),
    "exp": Function((1, 1), _unary_math(_np("exp"), lambda x: x < 700)),
    "power": Function((2, 2), _power),
    "pow": Function((2, 2), _power),
    "least": Function((1, 100), _extreme(_np("nanmin"))),
    "greatest": Function((1, 100), _extreme(_np("nanmax"))),
    "coalesce": Function((1, 100), _coalesce),
    "nullif": Function((2, 2), _nullif),
    "lower": Function((1, 1), _text(str.lower)),
    "upper": Function((1, 1), _text(str.upper)),
    "trim": Function((1, 1), _text(lambda s: s.strip(" "))),
    "length": Function((1, 1), _text(len, "num")),
    "substr": Function((2, 3), _substr),
    "substring": Function((2, 3), _substr),
    "concat": Function((1, 100), _concat),
    "replace": Function((3, 3), _replace),
    "starts_with": Function((2, 2), _string_test(str.startswith)),
    "contains": Function((2, 2), _string_test(lambda a, b: b in a)),
    "year": Function((1, 1), _part(lambda dt: dt.year)),
    "quarter": Function((1, 1), _part(lambda dt: dt.quarter)),
    "month": Function((1, 1), _part(lambda dt: dt.month)),
    "day": Function((1, 1), _part(lambda dt: dt.day)),
    "dayofmonth": Function((1, 1), _part(lambda dt: dt.day)),
    "hour": Function((1, 1), _part(lambda dt: dt.hour)),
    "minute": Function((1, 1), _part(lambda dt: dt.minute)),
    "second": Function((1, 1), _part(lambda dt: dt.second)),
    "dayofweek": Function((1, 1), _part(lambda dt: (dt.dayofweek + 1) % 7)),
    "isodow": Function((1, 1), _part(lambda dt: dt.dayofweek + 1)),
    "dayofyear": Function((1, 1), _part(lambda dt: dt.dayofyear)),
    "week": Function((1, 1), _part(lambda dt: dt.isocalendar().week)),
    "epoch": Function((1, 1), _epoch),
    "date_diff": Function((3, 3), _date_diff),
}
