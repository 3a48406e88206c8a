"""Render a plan step for one order: Jinja2 sandbox, strict variables, a Markdown body made
into a text part and an HTML part in the site's layout."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, Undefined, UndefinedError
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing
from markupsafe import Markup

from commplan_xl.excel.read import parse_date
from commplan_xl.i18n import N_, _
from commplan_xl.model import Customer, Order, Step
from commplan_xl.problems import CommplanError

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from markdown_it.tree import SyntaxTreeNode


_HINT = N_('(check the spelling; "commplan variables" lists them)')
# French names of the built-in variables: the same objects under a second name.
ALIASES = {"client": "customer", "commande": "order", "etape": "step", "expediteur": "sender"}


class RenderError(CommplanError):
    """A template could not be rendered for one order (a message-level problem); `part`
    says which ("subject", "body", "signature", "layout")."""

    def __init__(self, message: str, *, part: str = "") -> None:
        super().__init__(message)
        self.part = part


@dataclass(frozen=True)
class InlineImage:
    """An image the HTML shows by `cid:` (the logo), carried inside the mail."""

    cid: str  # the Content-ID without its angle brackets
    path: Path  # the file, read when the mail is built


@dataclass(frozen=True)
class Rendered:
    subject: str  # one line, trimmed
    text: str  # the plain-text body (Markdown made readable), "\n" line endings
    html: str  # the HTML document: the body's Markdown as HTML in the layout, CSS inlined
    images: tuple[InlineImage, ...] = ()  # shown inline by the HTML (the logo)


@dataclass(frozen=True)
class Layout:
    """What the HTML part of every mail of a site is made with."""

    source: str  # the Jinja page, `{{ content }}` where the body goes
    origin: Path | None = None  # the site's layout.html; None for the built-in layout
    signature: str = ""  # a Markdown template shown under the body
    logo: InlineImage | None = None
    logo_alt: str = ""  # the logo's text where images are not shown: the sender's name
    logo_width: int | None = None  # shown width in pixels, when the file says its size
    problem: str | None = None  # why no mail can be made with it yet (e.g. the logo is missing)


@lru_cache(maxsize=1)
def builtin_source() -> str:
    """The built-in layout: a 600-pixel table, styles inlined when a mail is made."""
    return resources.files("commplan_xl.mail").joinpath("layout.html").read_text("utf-8")


def builtin_layout() -> Layout:
    """The built-in layout with no logo and no signature."""
    return Layout(builtin_source())


class UnknownVariable(UndefinedError):
    """A template used a variable that does not exist; the message is its dotted name."""


class EmptyValue(UndefinedError):
    """A template printed (or computed with) an empty cell without a fallback; the message
    is the column's name."""


class WaitingForValue(RenderError):
    """The message waits: a cell it uses is empty for this order (`column`)."""

    def __init__(self, column: str) -> None:
        super().__init__(f"waiting for {column}")
        self.column = column


class EmptyCell(Undefined):
    """An empty cell of Customers or Orders: false in `{% if %}`, replaced by `|default`,
    `or` and `if`, but printing it (or any other use) raises EmptyValue: the message waits
    for the value rather than going out with a hole in it."""

    __slots__ = ()

    def __init__(self, column: str) -> None:
        super().__init__(name=column, exc=EmptyValue)

    @property
    def _undefined_message(self) -> str:
        return str(self._undefined_name)

    def __str__(self) -> str:
        self._fail_with_undefined_error()
        return ""  # pragma: no cover - the line above always raises

    def __html__(self) -> str:
        return self.__str__()


def is_empty(value: Any) -> bool:
    """True for an empty cell: nothing, or only spaces."""
    return value is None or (type(value) is str and not value.strip())


class FilterError(ValueError):
    """A filter got a value it cannot format; the message is a sentence."""


class Namespace:
    """Attribute access over a dict (`order.product`) where a missing name is undefined.

    Only names starting with `_` are the object's own, and the sandbox refuses those to
    templates, so any column name (even `items` or `keys`) stays a column.
    """

    __slots__ = ("_path", "_values", "_cells")

    def __init__(self, path: str, values: Mapping[str, Any], *, cells: bool = False) -> None:
        self._path = path
        self._values = dict(values)
        self._cells = cells  # workbook cells: an empty one is an EmptyCell

    def __getattr__(self, name: str) -> Any:
        try:
            value = self._values[name]
        except KeyError:
            raise AttributeError(name) from None
        return EmptyCell(name) if self._cells and is_empty(value) else value

    def __getitem__(self, name: str) -> Any:
        value = self._values[name]
        return EmptyCell(name) if self._cells and is_empty(value) else value

    def __contains__(self, name: object) -> bool:
        return name in self._values

    def __iter__(self):
        return iter(self._values)

    def __repr__(self) -> str:
        return f"Namespace({self._path!r})"


class _Undefined(StrictUndefined):
    """StrictUndefined whose error names the full variable, e.g. `order.prodcut`."""

    __slots__ = ()

    def __init__(
        self,
        hint: str | None = None,
        obj: Any = missing,
        name: str | None = None,
        exc: type[TemplateRuntimeError] = UndefinedError,
    ) -> None:
        if exc is UndefinedError:
            exc = UnknownVariable
        super().__init__(hint, obj, name, exc)

    @property
    def _undefined_message(self) -> str:
        if self._undefined_exception is not UnknownVariable:
            return super()._undefined_message
        obj = self._undefined_obj
        if isinstance(obj, Namespace):
            return f"{obj._path}.{self._undefined_name}"
        if self._undefined_hint or not isinstance(self._undefined_name, str):
            return super()._undefined_message
        return self._undefined_name


# ---------------------------------------------------------------- filters


def parse_amount(value: Any) -> Decimal:
    """A number from a number or text like `1 234,50`, `1234.50` or `1,234.50 €`."""
    if isinstance(value, bool):
        raise FilterError(_('"{value}" is not an amount').format(value=value))
    if isinstance(value, int | float | Decimal):
        return Decimal(str(value))
    text = re.sub(r"[\s\u00a0\u202f'€$£]", "", str(value))
    # The last of "," and "." is the decimal separator; the other groups thousands.
    if "," in text and "." in text:
        dec = "," if text.rfind(",") > text.rfind(".") else "."
        text = text.replace("." if dec == "," else ",", "").replace(",", ".")
    else:
        text = text.replace(",", ".")
    try:
        amount = Decimal(text)
    except InvalidOperation:
        raise FilterError(_('"{value}" is not an amount').format(value=value)) from None
    if not amount.is_finite():
        raise FilterError(_('"{value}" is not an amount').format(value=value))
    return amount


def _defined(value: Any) -> None:
    """Raise the error of an undefined value (an empty cell, an unknown variable) given
    to a filter, as printing it would."""
    if isinstance(value, Undefined):
        str(value)


def _date_filter(locale: str):
    @lru_cache(maxsize=4096)  # a run's mails share a few dates; Babel is slow per call
    def formatted(day: dt.date, fmt: str) -> str:
        return format_date(day, format=fmt, locale=locale)

    def date(value: Any, fmt: str = "long") -> str:
        _defined(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        try:  # the same date rules as the workbook's date columns
            day = parse_date(value)
        except ValueError as exc:
            raise FilterError(str(exc)) from None
        return formatted(day, fmt)

    return date


def _money_filter(locale: str):
    def money(value: Any, currency: str = "EUR") -> str:
        _defined(value)
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        return format_currency(parse_amount(value), currency, locale=locale)

    return money


# Every ASCII punctuation character may be backslash-escaped in CommonMark, and then stands
# for itself: nothing in an escaped value can start markup, a link or an HTML entity.
_MD_SPECIAL = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


class StaffText(str):
    """Text the staff wrote in Settings or Variables (the site's constants): Markdown like
    the template itself, so `www.shop.fr` in a constant becomes a link. Customer and order
    cells are data and stay escaped."""

    __slots__ = ()


def markdown_value(value: Any) -> str:
    """A value as Markdown text that shows it literally: punctuation backslash-escaped, its
    line breaks kept (never a blank line or an indent, which would start a new block)."""
    if type(value) is StaffText:
        return str.__str__(value)
    text = "" if value is None else str(value)
    if "\r" in text or "\n" in text:
        lines = _normalise_newlines(text).split("\n")
        text = "\n".join(line.strip() for line in lines if line.strip())
    return _MD_SPECIAL.sub(r"\\\1", text)


MAX_TEXT = 1_000_000  # characters one expression may build: a mail is far shorter


class TooLong(SecurityError):
    """A template would build a text too long for any mail (e.g. `{{ 'x' * 2000000000 }}`)."""


def _checked_size(size: int) -> None:
    if size > MAX_TEXT:
        raise TooLong(str(size))


def _widths(text: str) -> list[int]:
    """The widths and precisions a %- or {}-format string asks for."""
    return [int(n) for n in re.findall(r"(\d+)", text)]


class _BoundedSandbox(SandboxedEnvironment):
    """The sandbox, plus a bound on what one expression may build, so a template stops with
    a clear error instead of filling the memory: repetition, powers, format widths, padding."""

    intercepted_binops = frozenset({"*", "**", "%"})

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "*":
            for seq, times in ((left, right), (right, left)):
                if isinstance(seq, str | list | tuple) and isinstance(times, int):
                    _checked_size(len(seq) * times)
        elif operator == "**" and isinstance(right, int | float) and abs(right) > 1000:
            raise TooLong(str(right))
        elif operator == "%" and isinstance(left, str):
            for width in _widths(left):
                _checked_size(width)
        return super().call_binop(context, operator, left, right)

    def wrap_str_format(self, value: Any) -> Any:
        wrapped = super().wrap_str_format(value)
        if wrapped is not None:
            for width in _widths(value.__self__):
                _checked_size(width)
        return wrapped

    def call(__self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:  # noqa: N805
        method = getattr(__obj, "__wrapped__", __obj)
        if isinstance(getattr(method, "__self__", None), str):
            for value in (*args, *kwargs.values()):
                if isinstance(value, int):
                    _checked_size(value)
        return super().call(__context, __obj, *args, **kwargs)


def _bounded_filter(name: str, base: Any) -> Any:
    def bounded(*args: Any, **kwargs: Any) -> Any:
        for value in (*args[1:], *kwargs.values()):
            if isinstance(value, int) and not isinstance(value, bool):
                _checked_size(value)
        return base(*args, **kwargs)

    bounded.__name__ = name
    return bounded


def _sandbox(locale: str, **options: Any) -> SandboxedEnvironment:
    env = _BoundedSandbox(undefined=_Undefined, keep_trailing_newline=True, **options)
    for name in ("center", "indent", "format", "wordwrap", "truncate"):
        env.filters[name] = _bounded_filter(name, env.filters[name])
    env.filters["date"] = _date_filter(locale)
    env.filters["money"] = _money_filter(locale)
    return env


@lru_cache(maxsize=16)
def environment(locale: str = "fr_FR") -> SandboxedEnvironment:
    """The sandbox for one locale (built once): strict variables, `date` and `money`."""
    return _sandbox(locale, autoescape=False)


@lru_cache(maxsize=16)
def markdown_environment(locale: str = "fr_FR") -> SandboxedEnvironment:
    """The sandbox for Markdown bodies and signatures: each `{{ … }}` prints its value
    escaped for Markdown, so workbook data never becomes markup or a link."""
    return _sandbox(locale, autoescape=False, finalize=markdown_value)


@lru_cache(maxsize=16)
def layout_environment(locale: str = "fr_FR") -> SandboxedEnvironment:
    """The sandbox for layouts (HTML): values HTML-escaped, `content` and `signature` given
    as ready HTML."""
    return _sandbox(locale, autoescape=True)


@lru_cache(maxsize=512)
def _compile(locale: str, source: str) -> Template:
    return environment(locale).from_string(source)


@lru_cache(maxsize=512)
def _compile_markdown(locale: str, source: str) -> Template:
    return markdown_environment(locale).from_string(source)


@lru_cache(maxsize=16)
def compile_layout(locale: str, source: str) -> Template:
    """A layout's compiled template (raises jinja2's TemplateError when it cannot compile)."""
    return layout_environment(locale).from_string(source)


# ---------------------------------------------------------------- context


def _order_values(order: Order) -> dict[str, Any]:
    values: dict[str, Any] = dict(order.fields)
    values.setdefault("order_id", order.order_id)
    values.setdefault("customer_id", order.customer_id)
    # Parsed dates win over their cell text so `order.delivery_date|date` always works.
    values.update({k: d for k, d in order.dates.items() if d is not None})
    return values


def _customer_values(customer: Customer) -> dict[str, Any]:
    values: dict[str, Any] = dict(customer.fields)
    values.setdefault("customer_id", customer.customer_id)
    values["name"] = values.get("name") or customer.name
    values["email"] = values.get("email") or "; ".join(customer.emails)
    return values


def build_context(
    *,
    order: Order,
    customer: Customer,
    plan_name: str,
    step_number: int,
    due_date: dt.date,
    today: dt.date,
    sender_name: str,
    sender_email: str,
    constants: Mapping[str, Any],
) -> dict[str, Any]:
    """Every variable a template may use. Built-in names win over a same-named constant.
    The staff's own text (constants, sender) is Markdown in a body; workbook data is not."""
    context: dict[str, Any] = {k: StaffText(v) if isinstance(v, str) else v
                               for k, v in constants.items()}
    context.update(
        customer=Namespace("customer", _customer_values(customer), cells=True),
        order=Namespace("order", _order_values(order), cells=True),
        plan=Namespace("plan", {"name": plan_name}),
        step=Namespace("step", {"number": step_number, "due_date": due_date}),
        today=today,
        sender=Namespace("sender", {"name": StaffText(sender_name),
                                    "email": StaffText(sender_email)}),
    )
    for alias, name in ALIASES.items():
        space = context[name]
        context[alias] = Namespace(alias, space._values, cells=space._cells)
    return context


def _example(value: Any) -> str:
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="minutes")
    if value is None:
        return ""
    return str(value)


def example_variables(
    *,
    order: Order,
    customer: Customer,
    plan_name: str,
    step_number: int = 1,
    due_date: dt.date,
    today: dt.date,
    sender_name: str,
    sender_email: str,
    constants: Mapping[str, Any],
) -> list[tuple[str, str]]:
    """Each variable name with an example value, in the order `commplan variables` shows."""
    context = build_context(
        order=order, customer=customer, plan_name=plan_name, step_number=step_number,
        due_date=due_date, today=today, sender_name=sender_name, sender_email=sender_email,
        constants=constants,
    )
    rows: list[tuple[str, str]] = []
    for name in ("customer", "order", "plan", "step"):
        space = context[name]
        rows += [(f"{name}.{key}", _example(space._values[key])) for key in space]
    rows.append(("today", _example(today)))
    rows += [(f"sender.{key}", _example(context["sender"][key])) for key in ("name", "email")]
    builtins = {"customer", "order", "plan", "step", "today", "sender", *ALIASES}
    rows += [(k, _example(v)) for k, v in constants.items() if k not in builtins]
    return rows


# ---------------------------------------------------------------- rendering


def fold_line(text: str) -> str:
    """One header-safe line: every line break (CR, LF, U+2028, …) and tab becomes a space."""
    return " ".join(" ".join(part.split()) for part in text.splitlines() if part.strip())


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def text_to_html(text: str, *, title: str = "", lang: str = "fr") -> str:
    """A small HTML document showing `text`: every character escaped, blank lines make
    paragraphs, single line breaks `<br>`."""
    paragraphs = re.split(r"\n[ \t]*\n+", text.strip("\n"))
    body = "\n".join(
        "<p>" + "<br>\n".join(html.escape(line) for line in p.split("\n")) + "</p>"
        for p in paragraphs
        if p.strip()
    )
    return (
        f'<!DOCTYPE html>\n<html lang="{html.escape(lang)}">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n</head>\n<body>\n{body}\n</body>\n</html>\n"
    )


_PARTS = {"subject": N_("the subject"), "body": N_("the body"),
          "signature": N_("the signature"), "layout": N_("the layout")}


def _explain(part: str, exc: Exception) -> str:
    """A sentence for people about why `part` ("subject" or "body") could not render."""
    the = _(_PARTS.get(part, part))
    if isinstance(exc, EmptyValue):  # a reason code (schedule.WAITING_FOR), said at the edge
        return f"waiting for {exc.message}"
    if isinstance(exc, UnknownVariable):
        return _('{part} uses "{name}", which does not exist {hint}').format(
            part=the, name=exc.message, hint=_(_HINT))
    if isinstance(exc, TooLong):
        return _("{part} would make a text longer than {limit} characters; shorten what it "
                 "repeats or pads").format(part=the, limit=f"{MAX_TEXT:,}".replace(",", " "))
    if isinstance(exc, SecurityError):
        found = re.search(r"attribute '([^']+)'", exc.message or "")
        what = f'"{found.group(1)}"' if found else _("something")
        return _("{part} uses {what}, which mail templates may not use (sandbox)").format(
            part=the, what=what)
    if isinstance(exc, TemplateSyntaxError):
        from commplan_xl.mail.template_check import syntax_sentence

        return _("{part} {problem}").format(
            part=the, problem=syntax_sentence(exc, getattr(exc, "source", None) or ""))
    if isinstance(exc, FilterError):
        return _("{part} could not be formatted: {error}").format(part=the, error=exc)
    if isinstance(exc, TemplateError):
        return _("{part} could not be rendered: {error}").format(
            part=the, error=exc.message or type(exc).__name__)
    return _("{part} could not be rendered: {error}").format(
        part=the, error=exc or type(exc).__name__)


def _render(part: str, template: Template, context: Mapping[str, Any]) -> str:
    try:
        return template.render(context)
    except EmptyValue as exc:
        raise WaitingForValue(str(exc.message)) from exc
    except Exception as exc:  # any template failure is this message's problem, not a crash
        raise RenderError(_explain(part, exc), part=part) from exc


def _compiled(part: str, compile_: Any, locale: str, source: str) -> Template:
    try:
        return compile_(locale, source)
    except Exception as exc:
        raise RenderError(_explain(part, exc), part=part) from exc


# ---------------------------------------------------------------- Markdown


@lru_cache(maxsize=1)
def markdown_parser() -> MarkdownIt:
    """CommonMark with bare web and mail addresses made links, raw HTML shown as text and a
    line break inside a paragraph kept as a line break."""
    from markdown_it import MarkdownIt

    options = {"html": False, "linkify": True, "breaks": True, "xhtmlOut": False}
    md = MarkdownIt("commonmark", options).enable("linkify")
    # linkify-it tries its large patterns on every paragraph and piece of text (about half
    # the time of a mail); only text with "name.tld", "@" or "//" can hold a link.
    linkify = md.linkify
    pretest, test = linkify.pretest, linkify.test
    linkify.pretest = lambda text: bool(_MAYBE_LINK.search(text)) and pretest(text)
    linkify.test = lambda text: bool(_MAYBE_LINK.search(text)) and test(text)
    return md


_MAYBE_LINK = re.compile(r"\w\.[^\W\d_]|@|//|mailto:", re.IGNORECASE)


@lru_cache(maxsize=64)  # a site's signature is often the same in every mail
def markdown_parts(source: str) -> tuple[str, str]:
    """The HTML fragment and the readable plain text of one Markdown text."""
    from markdown_it.tree import SyntaxTreeNode

    md = markdown_parser()
    tokens = md.parse(source)
    return md.renderer.render(tokens, md.options, {}), _text_blocks(SyntaxTreeNode(tokens))


def _text_blocks(node: SyntaxTreeNode, sep: str = "\n\n") -> str:
    return sep.join(t for t in (_text_block(child) for child in node.children) if t)


def _indent(text: str, first: str, rest: str) -> str:
    lines = text.split("\n")
    return "\n".join([first + lines[0], *((rest + line) if line else line for line in lines[1:])])


def _text_block(node: SyntaxTreeNode) -> str:
    kind = node.type
    if kind in ("paragraph", "heading"):
        return _text_inline(node.children[0]) if node.children else ""
    if kind in ("bullet_list", "ordered_list"):
        start = int(str(node.attrs.get("start", 1)))
        items = []
        for number, item in enumerate(node.children, start=start):
            marker = "- " if kind == "bullet_list" else f"{number}. "
            items.append(_indent(_text_blocks(item, "\n"), marker, " " * len(marker)))
        return "\n".join(items)
    if kind == "blockquote":
        return "\n".join(f"> {line}".rstrip() for line in _text_blocks(node).split("\n"))
    if kind in ("code_block", "fence", "html_block"):
        return node.content.rstrip("\n")
    if kind == "hr":
        return "-" * 20
    return _text_blocks(node)


def _text_inline(node: SyntaxTreeNode) -> str:
    parts: list[str] = []
    for child in node.children:
        kind = child.type
        if kind in ("softbreak", "hardbreak"):
            parts.append("\n")
        elif kind == "link":
            label, href = _text_inline(child), str(child.attrs.get("href", ""))
            bare = {href, href.removeprefix("mailto:"), href.removeprefix("http://"),
                    href.removeprefix("https://")}
            parts.append(label if label in bare else f"{label} ({href})")
        elif child.children:  # strong, em, image: their words
            parts.append(_text_inline(child))
        else:  # text, code_inline, html_inline (shown as typed)
            parts.append(child.content)
    return "".join(parts)


# ---------------------------------------------------------------- a whole message


def render_message(step: Step, context: Mapping[str, Any], *, locale: str,
                   html: bool = True, layout: Layout | None = None) -> Rendered:
    """Subject (one line), text part and HTML part for one step and one context.

    The body and the layout's signature are Markdown templates whose values print escaped;
    the HTML is the body's Markdown in the layout (the built-in one by default), the text
    the same Markdown made readable. `html=False` renders the templates only (the text is
    the rendered Markdown, the HTML empty), for a caller that checks a mail can be made.
    """
    if layout is None:
        layout = builtin_layout()
    subject = fold_line(_render("subject", _compile(locale, step.subject), context))
    body = _normalise_newlines(
        _render("body", _compiled("body", _compile_markdown, locale, step.body), context))
    signature = ""
    if layout.signature.strip():
        template = _compiled("signature", _compile_markdown, locale, layout.signature)
        signature = _normalise_newlines(_render("signature", template, context))
    if not html:
        return Rendered(subject=subject, text=body, html="")
    if layout.problem:
        raise RenderError(layout.problem)
    content, text = markdown_parts(body)
    signature_html, signature_text = markdown_parts(signature) if signature else ("", "")
    if signature_text:
        text += "\n\n-- \n" + signature_text
    page = _page(layout, context, locale=locale, subject=subject, content=content,
                 signature=signature_html)
    images = (layout.logo,) if layout.logo is not None else ()
    return Rendered(subject=subject, text=text, html=page, images=images)


def render_subject(source: str, context: Mapping[str, Any], *, locale: str) -> str:
    """A subject template rendered on one line (RenderError with a sentence if it cannot)."""
    return fold_line(_render("subject", _compiled("subject", _compile, locale, source), context))


def _page(layout: Layout, context: Mapping[str, Any], *, locale: str, subject: str,
          content: str, signature: str) -> str:
    """The layout filled in, its <style> rules inlined on each element (mail programs
    such as Gmail drop or ignore style sheets)."""
    logo = None
    if layout.logo is not None:
        logo = Namespace("logo", {"src": f"cid:{layout.logo.cid}", "alt": layout.logo_alt,
                                  "width": layout.logo_width})
    values = dict(context)
    values.update(content=Markup(content), signature=Markup(signature), subject=subject,
                  lang=locale.split("_")[0].split("-")[0] or "fr", logo=logo)
    template = _compiled("layout", compile_layout, locale, layout.source)
    page = _render("layout", template, values)
    try:
        return _inliner().inline(page)
    except ValueError as exc:  # css_inline.InlineError: a style rule it cannot read
        raise RenderError(_("the layout's styles could not be applied: {error}").format(
            error=exc), part="layout") from None


@lru_cache(maxsize=1)
def _inliner() -> Any:
    import css_inline

    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)


def template_error(source: str, *, part: str = "template") -> str | None:
    """Compile-only check (for `commplan check`): a sentence, or None when it compiles."""
    try:
        environment("fr_FR").from_string(source)
    except TemplateSyntaxError as exc:
        return _explain(part, exc)
    except TemplateError as exc:
        return _explain(part, exc)
    return None
