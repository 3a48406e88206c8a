"""Render a plan step for one order: Jinja2 sandbox, strict variables, text and simple HTML."""

from __future__ import annotations

import datetime as dt
import html
import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from babel.dates import format_date
from babel.numbers import format_currency
from jinja2 import StrictUndefined, Template, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError, TemplateError, TemplateRuntimeError
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import missing

from commplan_xl.excel.read import parse_date
from commplan_xl.model import Customer, Order, Step
from commplan_xl.problems import CommplanError

_HINT = '(check the spelling; "commplan variables" lists them)'


class RenderError(CommplanError):
    """A template could not be rendered for one order (a message-level problem)."""


@dataclass(frozen=True)
class Rendered:
    subject: str  # one line, trimmed
    text: str  # the plain-text body, "\n" line endings
    html: str  # a small HTML document of the same text, every character escaped


class UnknownVariable(UndefinedError):
    """A template used a variable that does not exist; the message is its dotted name."""


class FilterError(ValueError):
    """A filter got a value it cannot format; the message is a sentence."""


class Namespace:
    """Attribute access over a dict (`order.product`) where a missing name is undefined.

    Only names starting with `_` are the object's own, and the sandbox refuses those to
    templates, so any column name (even `items` or `keys`) stays a column.
    """

    __slots__ = ("_path", "_values")

    def __init__(self, path: str, values: Mapping[str, Any]) -> None:
        self._path = path
        self._values = dict(values)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, name: str) -> Any:
        return self._values[name]

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
        raise FilterError(f'"{value}" is not an amount')
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
        raise FilterError(f'"{value}" is not an amount') from None
    if not amount.is_finite():
        raise FilterError(f'"{value}" is not an amount')
    return amount


def _date_filter(locale: str):
    @lru_cache(maxsize=4096)  # a run's mails share a few dates; Babel takes ~40 µs each
    def formatted(day: dt.date, fmt: str) -> str:
        return format_date(day, format=fmt, locale=locale)

    def date(value: Any, fmt: str = "long") -> str:
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
        if value is None or (isinstance(value, str) and not value.strip()):
            return ""
        return format_currency(parse_amount(value), currency, locale=locale)

    return money


@lru_cache(maxsize=16)
def environment(locale: str = "fr_FR") -> SandboxedEnvironment:
    """The sandbox for one locale (built once): strict variables, `date` and `money`."""
    env = SandboxedEnvironment(
        undefined=_Undefined, autoescape=False, keep_trailing_newline=True
    )
    env.filters["date"] = _date_filter(locale)
    env.filters["money"] = _money_filter(locale)
    return env


@lru_cache(maxsize=512)
def _compile(locale: str, source: str) -> Template:
    return environment(locale).from_string(source)


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
    """Every variable a template may use. Built-in names win over a same-named constant."""
    context: dict[str, Any] = dict(constants)
    context.update(
        customer=Namespace("customer", _customer_values(customer)),
        order=Namespace("order", _order_values(order)),
        plan=Namespace("plan", {"name": plan_name}),
        step=Namespace("step", {"number": step_number, "due_date": due_date}),
        today=today,
        sender=Namespace("sender", {"name": sender_name, "email": sender_email}),
    )
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
        rows += [(f"{name}.{key}", _example(space[key])) for key in space]
    rows.append(("today", _example(today)))
    rows += [(f"sender.{key}", _example(context["sender"][key])) for key in ("name", "email")]
    builtins = {"customer", "order", "plan", "step", "today", "sender"}
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


def _explain(part: str, exc: Exception) -> str:
    """A sentence for people about why `part` ("subject" or "body") could not render."""
    if isinstance(exc, UnknownVariable):
        return f'the {part} uses "{exc.message}", which does not exist {_HINT}'
    if isinstance(exc, SecurityError):
        found = re.search(r"attribute '([^']+)'", exc.message or "")
        what = f'"{found.group(1)}"' if found else "something"
        return f"the {part} uses {what}, which mail templates may not use (sandbox)"
    if isinstance(exc, TemplateSyntaxError):
        return f"the {part} has a mistake on line {exc.lineno}: {exc.message}"
    if isinstance(exc, FilterError):
        return f"the {part} could not be formatted: {exc}"
    if isinstance(exc, TemplateError):
        return f"the {part} could not be rendered: {exc.message or type(exc).__name__}"
    return f"the {part} could not be rendered: {exc or type(exc).__name__}"


def _render(part: str, source: str, context: Mapping[str, Any], locale: str) -> str:
    try:
        return _compile(locale, source).render(context)
    except Exception as exc:  # any template failure is this message's problem, not a crash
        raise RenderError(_explain(part, exc)) from exc


def render_message(step: Step, context: Mapping[str, Any], *, locale: str,
                   html: bool = True) -> Rendered:
    """Subject (one line), text body and its HTML twin for one step and one context
    (`html=False`: no twin, for a caller that only checks the mail can be made)."""
    subject = fold_line(_render("subject", step.subject, context, locale))
    text = _normalise_newlines(_render("body", step.body, context, locale))
    if not html:
        return Rendered(subject=subject, text=text, html="")
    lang = locale.split("_")[0].split("-")[0] or "fr"
    return Rendered(subject=subject, text=text, html=text_to_html(text, title=subject, lang=lang))


def template_error(source: str, *, part: str = "template") -> str | None:
    """Compile-only check (for `commplan check`): a sentence, or None when it compiles."""
    try:
        environment("fr_FR").from_string(source)
    except TemplateSyntaxError as exc:
        return _explain(part, exc)
    except TemplateError as exc:
        return _explain(part, exc)
    return None
