"""Read a YAML spec into a `Cell`, keeping a file:line:col on every piece.

The YAML is composed into nodes (never constructed into Python objects by the YAML library),
then walked here; any YAML tag (`!!python/object/apply:...`, `!foo`) is refused outright, so
nothing in a spec can even name a constructor. Expressions go to the restricted parser in
`expr.py`, with a map from each character of a scalar's value back to its line and column in
the file, whatever the scalar's style (plain, quoted with escapes, folded over lines, `|`/`>`
blocks). Name resolution and shape checks happen when the cell is lowered to IR.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from lstmc.errors import Location, SpecError, did_you_mean
from lstmc.ir.shapes import Size
from lstmc.spec.cell import PARAM_INITS, Cell, Constant, Decl, Equation
from lstmc.spec.expr import identifier_problem, parse_expr, parse_number
from lstmc.spec.yaml_source import _advance, _source_offsets, _SpecLoader, _TagFound

SECTIONS = {
    "cell": "the cell's name, an identifier",
    "doc": "a docstring",
    "sizes": "a list of size symbols",
    "inputs": "a mapping name -> shape",
    "state": "a mapping name -> shape",
    "params": "a mapping name -> shape or {shape:, init:}",
    "constants": "a mapping name -> number",
    "equations": "a mapping name -> expression",
    "update": "a mapping state name -> expression",
    "outputs": "a list of equation names",
}
_NULL_TAG = "tag:yaml.org,2002:null"  # what an empty value (`key:` alone, `~`) reads as
REQUIRED = ("cell", "sizes", "inputs", "state", "params", "equations", "update", "outputs")


class _Reader:
    def __init__(self, text: str, file: str):
        self.text = text
        self.file = file
        self.scalar_starts: dict[int, yaml.Mark] = {}

    def start(self, node: yaml.Node) -> yaml.Mark:
        """Where a node's own text starts: a scalar's first character, not its anchor."""
        if isinstance(node, yaml.ScalarNode):
            return self.scalar_starts.get(node.end_mark.index, node.start_mark)
        return node.start_mark

    def loc(self, node: yaml.Node) -> Location:
        mark = self.start(node)
        return Location(self.file, mark.line + 1, mark.column + 1)

    def loc_at(self, index: int) -> Location:
        """The location of `self.text[index]`."""
        line, col = _advance(self.text, yaml.Mark("", 0, 0, 0, None, None), index)
        return Location(self.file, line + 1, col + 1)

    def error(self, message: str, node: yaml.Node) -> SpecError:
        return SpecError(message, self.loc(node))

    # -- YAML node helpers -------------------------------------------------------------------

    def mapping(self, node: yaml.Node, what: str) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.error(f"{what} must be a mapping (`name: value` lines)", node)
        seen: dict[str, yaml.Node] = {}
        for key, _ in node.value:
            k = self.scalar(key, f"a key in {what}")
            if k in seen:
                first = self.loc(seen[k])
                raise self.error(f"`{k}` is defined twice in {what} (first at {first})", key)
            seen[k] = key
        return node.value

    def empty_ok(self, node: yaml.Node) -> yaml.Node:
        """An empty value (`params:` with nothing under it, or `~`) as an empty mapping."""
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL_TAG:
            return yaml.MappingNode("tag:yaml.org,2002:map", [], node.start_mark, node.end_mark)
        return node

    def scalar(self, node: yaml.Node, what: str) -> str:
        if not isinstance(node, yaml.ScalarNode):
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a mapping"
            raise self.error(f"{what} must be a single value, not {kind}", node)
        return node.value

    def sequence(self, node: yaml.Node, what: str) -> list[yaml.Node]:
        if not isinstance(node, yaml.SequenceNode):
            raise self.error(f"{what} must be a list like [a, b]", node)
        return node.value

    def identifier(self, node: yaml.Node, what: str) -> str:
        name = self.scalar(node, what)
        problem = identifier_problem(name)
        if problem:
            raise self.error(f"{what}: {problem}", node)
        return name

    def where(self, node: yaml.ScalarNode):
        """Map a character offset in a scalar's value to its location in the file, for every
        scalar style: plain or quoted, on one line or folded over several, `|` and `>` blocks,
        escapes in double quotes."""
        mark = self.start(node)
        offsets = _source_offsets(self.text, mark.index, node.value, node.style)
        value = node.value

        def at(offset: int) -> Location:
            if offset < len(offsets):
                index = offsets[offset]
            else:  # the end of the expression: just after its last non-blank character
                k = len(value.rstrip()) - 1
                index = offsets[k] + 1 if k >= 0 else mark.index
            line, col = _advance(self.text, mark, index)
            return Location(self.file, line + 1, col + 1)

        return at

    def expression(self, section: yaml.Node, value: yaml.ScalarNode, text: str):
        """parse_expr of an equation's text. In a flow mapping (`{h: h_next, m: max(a, b)}`)
        YAML ends a plain value at its first comma, before lstmc sees the rest: a parse error
        at the end of such a value says so."""
        try:
            return parse_expr(text, self.where(value))
        except SpecError as err:
            end = value.end_mark.index  # where YAML ended the value: at a comma, if cut
            cut = getattr(section, "flow_style", False) and value.style is None
            cut = cut and self.text[end:].lstrip(" \t")[:1] == ","
            if not cut or "the end of the expression" not in err.message:
                raise
            raise SpecError(
                f"{err.message} (in a `{{...}}` mapping YAML ends a value at a comma: "
                "quote the expression, or write the section as indented lines)",
                err.location,
            ) from None

    # -- sections ----------------------------------------------------------------------------

    def shape(self, node: yaml.Node, what: str, sizes: dict[str, Location]) -> tuple:
        dims = self.sequence(node, f"the shape of {what}")
        if not 1 <= len(dims) <= 2:
            raise self.error(
                f"the shape of {what} must have 1 or 2 dimensions, got {len(dims)}", node
            )
        shape = []
        for dim in dims:
            text = self.scalar(dim, f"a dimension of {what}")
            try:
                if not text.isascii():
                    raise ValueError(text)
                size = Size.parse(text)
            except ValueError:
                raise self.error(
                    f"bad dimension `{text}` in {what}: write a size symbol, a sum of them "
                    f"(`hidden + input`) or a whole number",
                    dim,
                ) from None
            for sym in size.symbols():
                if sym not in sizes:
                    raise self.error(
                        f"unknown size `{sym}` in the shape of {what}{did_you_mean(sym, sizes)}; "
                        f"declare it under `sizes:`",
                        dim,
                    )
            if size.evaluate({s: 1 for s in sizes}) <= 0:
                raise self.error(f"dimension `{text}` of {what} must be positive", dim)
            shape.append(size)
        return tuple(shape)

    def compose(self) -> yaml.Node | None:
        """The YAML node tree; SpecError at the place of any YAML problem or tag."""
        loader = None
        try:
            loader = _SpecLoader(self.text)
            self.scalar_starts = loader.scalar_starts
            return loader.get_single_node()
        except _TagFound as found:
            tok = found.token
            handle, suffix = tok.value
            raise SpecError(
                f"YAML tags like `{handle or ''}{suffix}` are not allowed in a spec",
                Location(self.file, tok.start_mark.line + 1, tok.start_mark.column + 1),
            ) from None
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            loc = Location(self.file, mark.line + 1, mark.column + 1) if mark else None
            problem = exc.problem or "invalid YAML"
            if exc.context:
                problem = f"{exc.context}: {problem}"
            raise SpecError(f"invalid YAML: {problem}", loc or Location(self.file, 1, 1)) from None
        except yaml.reader.ReaderError as exc:  # a character YAML does not allow
            char = chr(exc.character) if isinstance(exc.character, int) else str(exc.character)
            raise SpecError(
                f"invalid YAML: the character U+{ord(char[:1] or ' '):04X} is not allowed",
                self.loc_at(exc.position),
            ) from None
        except yaml.YAMLError as exc:
            raise SpecError(f"invalid YAML: {exc}", Location(self.file, 1, 1)) from None
        except RecursionError:
            raise SpecError(
                "invalid YAML: the document nests too deeply", Location(self.file, 1, 1)
            ) from None
        finally:
            if loader is not None:
                loader.dispose()

    def check_bindable(self, cell: Cell) -> None:
        """Every size symbol must be a whole dimension of the input, a state variable or a
        param: kernels bind sizes from the arrays they are given (`[k, hidden]` binds k,
        `[2*k]` or `[k + hidden]` alone can not)."""
        bare = set()
        used = set()
        for decl in [*cell.inputs.values(), *cell.state.values(), *cell.params.values()]:
            for size in decl.shape:
                used |= size.symbols()
                if size.symbol is not None:
                    bare.add(size.symbol)
        for name, loc in cell.sizes.items():
            if name not in used:
                raise SpecError(
                    f"size `{name}` is declared but no input, state or param uses it", loc
                )
            if name not in bare:
                raise SpecError(
                    f"size `{name}` can't be bound from the arrays: no input, state or param has "
                    f"`{name}` alone as a dimension (like `[{name}, ...]`)",
                    loc,
                )

    def load(self) -> Cell:
        root = self.compose()
        if root is None:
            raise SpecError("the spec is empty", Location(self.file, 1, 1))
        top = {}
        for key, value in self.mapping(root, "the spec"):
            k = key.value
            if k not in SECTIONS:
                raise self.error(
                    f"unknown section `{k}`{did_you_mean(k, SECTIONS)}; "
                    f"sections are {', '.join(SECTIONS)}",
                    key,
                )
            top[k] = (key, value)
        for k in REQUIRED:
            if k not in top:
                raise SpecError(f"missing section `{k}:` ({SECTIONS[k]})", self.loc(root))

        name_node = top["cell"][1]
        cell = Cell(
            name=self.identifier(name_node, "the cell name"),
            doc=self.scalar(top["doc"][1], "`doc`") if "doc" in top else "",
            file=self.file,
            source=self.text,
            loc=self.loc(name_node),
        )
        defined: dict[str, Location] = {}

        def define(node: yaml.Node, what: str) -> str:
            name = self.identifier(node, what)
            if name in defined:
                raise self.error(f"`{name}` is already defined at {defined[name]}", node)
            defined[name] = self.loc(node)
            return name

        for node in self.sequence(top["sizes"][1], "`sizes`"):
            name = define(node, "a size name")
            if name == "seed":  # kernel.init_params(seed=..., **sizes) takes sizes by name
                raise self.error(
                    "a size can't be called `seed`: `kernel.init_params(seed=0, **sizes)` "
                    "takes the sizes by name, and `seed` is its random seed",
                    node,
                )
            cell.sizes[name] = self.loc(node)
        if not cell.sizes:
            raise self.error("`sizes` must name at least one size symbol", top["sizes"][1])

        for section, target in (("inputs", cell.inputs), ("state", cell.state)):
            for key, value in self.mapping(self.empty_ok(top[section][1]), f"`{section}`"):
                name = define(key, f"a name in `{section}`")
                shape = self.shape(value, f"`{name}`", cell.sizes)
                if len(shape) != 1:
                    raise self.error(f"`{name}` must be a vector ([size]), got a matrix", value)
                target[name] = Decl(name, shape, self.loc(key))
        if len(cell.inputs) != 1:
            extra = list(cell.inputs.values())[1:]
            raise SpecError(
                "a cell takes exactly one input vector, `inputs` declares "
                f"{len(cell.inputs)}; concatenate several inputs into one",
                extra[0].loc if extra else self.loc(top["inputs"][1]),
            )
        if not cell.state:
            raise self.error("a recurrent cell needs at least one state variable", top["state"][1])

        for key, value in self.mapping(self.empty_ok(top["params"][1]), "`params`"):
            name = define(key, "a param name")
            init = "uniform"
            shape_node = value
            if isinstance(value, yaml.MappingNode):
                fields = {k.value: (k, v) for k, v in self.mapping(value, f"param `{name}`")}
                for k, (knode, _) in fields.items():
                    if k not in ("shape", "init"):
                        raise self.error(
                            f"unknown field `{k}` in param `{name}`{did_you_mean(k, ['shape', 'init'])}"
                            "; a param has `shape` and optionally `init`",
                            knode,
                        )
                if "shape" not in fields:
                    raise self.error(f"param `{name}` needs a `shape:`", value)
                shape_node = fields["shape"][1]
                if "init" in fields:
                    init = self.scalar(fields["init"][1], f"the init of `{name}`")
                    if init not in PARAM_INITS:
                        raise self.error(
                            f"unknown init `{init}` for `{name}`{did_you_mean(init, PARAM_INITS)}; "
                            f"choose one of {', '.join(PARAM_INITS)}",
                            fields["init"][1],
                        )
            cell.params[name] = Decl(
                name, self.shape(shape_node, f"`{name}`", cell.sizes), self.loc(key), init
            )

        self.check_bindable(cell)

        if "constants" in top:
            for key, value in self.mapping(self.empty_ok(top["constants"][1]), "`constants`"):
                name = define(key, "a constant name")
                text = self.scalar(value, f"the value of constant `{name}`")
                cell.constants[name] = Constant(
                    name, parse_number(text, self.loc(value)), self.loc(key)
                )

        for key, value in self.mapping(top["equations"][1], "`equations`"):
            name = define(key, "an equation name")
            text = self.scalar(value, f"the equation `{name}`")
            if not text.strip():
                raise self.error(f"the equation `{name}` is empty", key)
            cell.equations[name] = Equation(
                name, self.expression(top["equations"][1], value, text), self.loc(key), text
            )

        for key, value in self.mapping(self.empty_ok(top["update"][1]), "`update`"):
            name = self.scalar(key, "a state name in `update`")
            if name not in cell.state:
                raise self.error(
                    f"`update` names `{name}`, which is not a state variable"
                    f"{did_you_mean(name, cell.state)}",
                    key,
                )
            text = self.scalar(value, f"the update of `{name}`")
            if not text.strip():
                raise self.error(f"the update of `{name}` is empty", key)
            expr = self.expression(top["update"][1], value, text)
            cell.update[name] = Equation(name, expr, self.loc(value), text)
        for name in cell.state:
            if name not in cell.update:
                raise self.error(
                    f"state variable `{name}` has no update; add `{name}: <new value>` "
                    f"under `update:`",
                    top["update"][0],
                )

        out_node = top["outputs"][1]
        out_items = (
            # `outputs:` with nothing after it names nothing (but `outputs: null` names the
            # equation `null`, as a name read anywhere else)
            ([] if out_node.tag == _NULL_TAG and out_node.value in ("", "~") else [out_node])
            if isinstance(out_node, yaml.ScalarNode)
            else self.sequence(out_node, "`outputs`")
        )
        if not out_items:
            raise self.error("`outputs` must name at least one equation", out_node)
        for node in out_items:
            name = self.scalar(node, "an output name")
            if name in [n for n, _ in cell.outputs]:
                raise self.error(f"`{name}` is listed twice in `outputs`", node)
            if name not in cell.equations:
                hint = ""
                if name in cell.state:
                    hint = (
                        " (a state name means the previous step's value; name the equation "
                        "that computes the new one)"
                    )
                raise self.error(
                    f"output `{name}` is not an equation{did_you_mean(name, cell.equations)}{hint}",
                    node,
                )
            cell.outputs.append((name, self.loc(node)))
        return cell


def load_text(text: str | bytes, file: str = "<string>") -> Cell:
    """Parse spec text (bytes are read as UTF-8). Raises SpecError (file:line:col) on any
    problem."""
    if isinstance(text, (bytes, bytearray)):
        text = _decode(bytes(text), file)
    elif not isinstance(text, str):
        raise SpecError(f"a spec is text (str, or UTF-8 bytes), got {type(text).__name__}", None)
    return _Reader(text, file).load()


def load_file(path: str | Path) -> Cell:
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"no such spec file: {path}", None) from None
    except OSError as exc:
        raise SpecError(f"cannot read {path}: {exc.strerror}", None) from None
    return load_text(_decode(data, str(path)), str(path))


def _decode(data: bytes, file: str) -> str:
    """`data` as UTF-8 text, or a SpecError at the first byte that is not."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        line_start = data.rfind(b"\n", 0, exc.start) + 1  # in characters, as other errors
        col = len(data[line_start : exc.start].decode("utf-8", errors="replace")) + 1
        raise SpecError(
            f"the spec is not UTF-8 text ({exc.reason}, byte 0x{data[exc.start]:02x})",
            Location(file, line, col),
        ) from None
