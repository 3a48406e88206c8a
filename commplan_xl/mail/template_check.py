"""What a template reads and what is wrong with it, found without rendering it for any
order: syntax errors in plain words, unknown variables and filters, the cells it reads."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache

from jinja2 import TemplateSyntaxError, meta, nodes

from commplan_xl.i18n import N_, _

# Names every mail may use (besides the site constants), and what they hold.
NAMESPACES: dict[str, frozenset[str] | None] = {
    "customer": frozenset({"customer_id", "name", "email"}),  # + the Customers columns
    "order": frozenset({"order_id", "customer_id"}),  # + the Orders columns
    "plan": frozenset({"name"}),
    "step": frozenset({"number", "due_date"}),
    "sender": frozenset({"name", "email"}),
    "today": None,  # a date: its own attributes (today.year)
}
# French names of the same namespaces (render.ALIASES).
ALIASES = {"client": "customer", "commande": "order", "etape": "step", "expediteur": "sender"}
NAMESPACES.update({alias: NAMESPACES[name] for alias, name in ALIASES.items()})
CELLS = ("customer", "order", "client", "commande")  # namespaces of workbook cells
_HINT = N_('(check the spelling; "commplan variables" lists them)')
_THE = {"subject": N_("the subject"), "body": N_("the body"), "signature": N_("the signature"),
        "layout": N_("the layout")}


@dataclass(frozen=True)
class KnownNames:
    """What a template may use: the columns of Customers and Orders and the constants."""

    customer_columns: frozenset[str] = frozenset()
    order_columns: frozenset[str] = frozenset()
    constants: frozenset[str] = frozenset()

    def attributes(self, name: str) -> frozenset[str] | None:
        name = ALIASES.get(name, name)
        base = NAMESPACES[name]
        if name == "customer":
            return base | self.customer_columns  # type: ignore[operator]
        if name == "order":
            return base | self.order_columns  # type: ignore[operator]
        return base


@dataclass(frozen=True)
class TemplateUse:
    """What one template reads, found in its syntax tree."""

    names: frozenset[str]  # variables read that the template does not set itself
    attributes: frozenset[tuple[str, str]]  # ("order", "product") for order.product
    filtered: frozenset[tuple[str, str, str]]  # ("order", "amount", "money"): cell, filter
    whole: frozenset[str]  # namespaces used otherwise than by attribute ({% set o = order %})
    filters: frozenset[str]
    tests: frozenset[str]
    private: frozenset[str] = frozenset()  # attributes starting with "_": the sandbox's

    def cells(self, namespace: str) -> tuple[str, ...]:
        """The columns of `namespace` ("order", "customer", or its French name) read."""
        return tuple(sorted(a for n, a in self.attributes
                            if ALIASES.get(n, n) == namespace))


class _AnyName(dict):
    """Filters or tests as the parser sees them: every name exists, so reading a template
    never stops at an unknown one (template_problems names those, all of them)."""

    def __contains__(self, name: object) -> bool:
        return True

    def get(self, name: object, default: object = None) -> object:
        return super().get(name) or _anything


def _anything(*args: object, **kwargs: object) -> None:
    """What an unknown filter or test stands for while a template is read."""


@lru_cache(maxsize=1)
def _parser_env():
    from jinja2.sandbox import SandboxedEnvironment

    env = SandboxedEnvironment()
    env.filters = _AnyName(env.filters)
    env.tests = _AnyName(env.tests)
    return env


@lru_cache(maxsize=1024)
def template_use(source: str) -> TemplateUse:
    """What `source` reads; raises jinja2's TemplateSyntaxError when it cannot be read."""
    tree = _parser_env().parse(source)
    names = frozenset(meta.find_undeclared_variables(tree))
    attributes: set[tuple[str, str]] = set()
    filtered: set[tuple[str, str, str]] = set()
    consumed: set[int] = set()
    for node in tree.find_all((nodes.Getattr, nodes.Getitem)):
        target = node.node
        if not isinstance(target, nodes.Name) or target.name not in names:
            continue
        if isinstance(node, nodes.Getattr):
            attr = node.attr
        elif isinstance(node.arg, nodes.Const) and isinstance(node.arg.value, str):
            attr = node.arg.value
        else:
            continue
        attributes.add((target.name, attr))
        consumed.add(id(target))
    for node in tree.find_all(nodes.Filter):
        inner = node.node
        if (isinstance(inner, nodes.Getattr) and isinstance(inner.node, nodes.Name)
                and inner.node.name in CELLS):
            filtered.add((inner.node.name, inner.attr, node.name))
    whole = frozenset(
        n.name for n in tree.find_all(nodes.Name)
        if n.name in CELLS and n.ctx == "load" and id(n) not in consumed and n.name in names
    )
    filters = frozenset(n.name for n in tree.find_all(nodes.Filter))
    tests = frozenset(n.name for n in tree.find_all(nodes.Test))
    private = frozenset(n.attr for n in tree.find_all(nodes.Getattr) if n.attr.startswith("_"))
    private |= {n.arg.value for n in tree.find_all(nodes.Getitem)
                if isinstance(n.arg, nodes.Const) and str(n.arg.value).startswith("_")}
    return TemplateUse(names, frozenset(attributes), frozenset(filtered), whole, filters,
                       tests, private)


def template_problems(source: str, part: str, known: KnownNames,
                      filters: Iterable[str], tests: Iterable[str]) -> list[str]:
    """Every problem of one template, each a sentence starting with "the {part}"; the
    template is read, never rendered."""
    the = _(_THE.get(part, part))
    try:
        use = template_use(source)
    except TemplateSyntaxError as exc:
        return [_("{part} {problem}").format(part=the, problem=syntax_sentence(exc, source))]
    out = [_('{part} uses "{name}", which mail templates may not use (sandbox)').format(
        part=the, name=name) for name in sorted(use.private)]
    missing = _('{part} uses "{name}", which does not exist {hint}')
    for name in sorted(use.names):
        if name not in NAMESPACES and name not in known.constants and name not in _GLOBALS:
            out.append(missing.format(part=the, name=name, hint=_(_HINT)))
    for name, attr in sorted(use.attributes):
        allowed = known.attributes(name) if name in NAMESPACES else None
        if allowed is not None and attr not in allowed and not attr.startswith("_"):
            out.append(missing.format(part=the, name=f"{name}.{attr}", hint=_(_HINT)))
    filters, tests = set(filters), set(tests)
    for name in sorted(use.filters - filters):
        out.append(_('{part} uses the filter "{name}", which does not exist (the filters are '
                     "date and money, and Jinja's own such as upper or default)").format(
                         part=the, name=name))
    for name in sorted(use.tests - tests):
        out.append(_('{part} uses the test "is {name}", which does not exist').format(
            part=the, name=name))
    return out


_GLOBALS = frozenset({"range", "dict", "lipsum", "cycler", "joiner", "namespace"})


# ---------------------------------------------------------------- syntax errors in words

_OPENERS = {"{{": "}}", "{%": "%}", "{#": "#}"}
_DELIMITER = re.compile(r"\{\{|\{%|\{#|\}\}|%\}|#\}")
_BLOCK_TAG = re.compile(r"\{%-?\s*(end)?(if|for|macro|call|filter|set|raw|block|with)\b")
_CLOSE = {"if": "endif", "for": "endfor", "macro": "endmacro", "call": "endcall",
          "filter": "endfilter", "set": "endset", "raw": "endraw", "block": "endblock",
          "with": "endwith"}


def _line_of(source: str, index: int) -> int:
    return source.count("\n", 0, index) + 1


def _unclosed_delimiter(source: str) -> tuple[str, int] | None:
    """The closing mark missing first ("}}", "%}", "#}") and the line of its opening."""
    opened: tuple[str, int] | None = None
    for found in _DELIMITER.finditer(source):
        mark = found.group()
        if mark in _OPENERS:
            if opened is not None:
                return _OPENERS[opened[0]], _line_of(source, opened[1])
            opened = (mark, found.start())
        elif opened is not None and mark == _OPENERS[opened[0]]:
            opened = None
    if opened is not None:
        return _OPENERS[opened[0]], _line_of(source, opened[1])
    return None


def _unclosed_block(source: str, tag: str) -> int | None:
    """The line of the last `{% tag %}` left open."""
    stack: list[int] = []
    for found in _BLOCK_TAG.finditer(source):
        if found.group(2) != tag:
            continue
        if found.group(1):
            if stack:
                stack.pop()
        else:
            stack.append(_line_of(source, found.start()))
    return stack[-1] if stack else None


def syntax_sentence(exc: TemplateSyntaxError, source: str) -> str:
    """Why a template cannot be read, in plain words with its line, to follow "the body"
    (Jinja's own message is for programmers)."""
    message = exc.message or ""
    line = exc.lineno
    unknown = re.match(r"No (filter|test) named '([^']+)'", message)
    if unknown:
        kind, name = unknown.groups()
        text = (_('uses the filter "{name}", which does not exist (line {line})') if
                kind == "filter" else
                _('uses the test "{name}", which does not exist (line {line})'))
        return text.format(name=name, line=line)
    missing = _unclosed_delimiter(source) if source else None
    if missing is not None:
        mark, at = missing
        return _('cannot be read: a "{mark}" is missing at the end of line {line}').format(
            mark=mark, line=at)
    block = re.search(r"needs to be closed is '(\w+)'", message)
    if block:
        tag = block.group(1)
        at = _unclosed_block(source, tag) if source else None
        opening, closing = f"{{% {tag} %}}", f"{{% {_CLOSE.get(tag, 'end' + tag)} %}}"
        if at:
            return _('cannot be read: the "{opening}" of line {line} is never closed by '
                     '"{closing}"').format(opening=opening, line=at, closing=closing)
        return _('cannot be read: the "{opening}" is never closed by "{closing}"').format(
            opening=opening, closing=closing)
    unknown_tag = re.search(r"unknown tag '(\w+)'", message)
    if unknown_tag:
        return _('cannot be read: "{tag}" on line {line} is not a known instruction (if, '
                 "else, endif, for, endfor…)").format(tag=f"{{% {unknown_tag.group(1)} %}}",
                                                      line=line)
    char = re.search(r"unexpected char '(.)'", message)
    if char:
        return _('cannot be read: the character "{char}" on line {line} cannot be used inside '
                 '{braces} (text in quotes must be closed: "…")').format(
                     char=char.group(1), line=line, braces="{{ … }}")
    got = re.search(r"got '([^']*)'", message)
    if got and got.group(1) not in ("end of print statement", "end of statement block"):
        return _('cannot be read: "{got}" is not expected on line {line} (one variable per '
                 "{braces}, e.g. {example})").format(got=got.group(1), line=line,
                                                     braces="{{ … }}",
                                                     example="{{ customer.name }}")
    return _("cannot be read: something is wrong on line {line} in a {braces} or {block}; "
             "compare it with the examples of `commplan variables`").format(
                 line=line, braces="{{ … }}", block="{% … %}")


def known_names(customer_columns: Iterable[str], order_columns: Iterable[str],
                constants: Mapping[str, object] | Iterable[str]) -> KnownNames:
    """KnownNames from the columns of Customers and Orders and the site constants."""
    return KnownNames(frozenset(customer_columns), frozenset(order_columns),
                      frozenset(constants))
