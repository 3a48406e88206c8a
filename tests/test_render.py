"""Rendering a plan step: sandbox, strict variables, filters, text and HTML."""

from __future__ import annotations

import datetime as dt

import pytest

from commplan_xl.mail.render import (
    Rendered,
    RenderError,
    build_context,
    example_variables,
    render_message,
    template_error,
)
from commplan_xl.model import Customer, Order, Step

DUE = dt.date(2026, 11, 27)


def spaces(text: str) -> str:
    """Babel separates thousands and the currency with no-break spaces: compare as spaces."""
    return text.replace("\u202f", " ").replace("\u00a0", " ")


def make_context(*, name: str = "Éloïse Lefèvre", **order_fields: object) -> dict:
    fields = {"product": "Baie vitrée", "amount": "1234,50", **order_fields}
    order = Order(
        order_id="O-001", customer_id="00123", plan="baie vitrée",
        dates={"start_date": dt.date(2026, 10, 1)}, fields=fields,
    )
    customer = Customer(
        customer_id="00123", name=name, emails=("eloise@example.test",),
        fields={"customer_id": "00123", "name": name, "email": "eloise@example.test",
                "telephone": "06 12 34 56 78"},
    )
    return build_context(
        order=order, customer=customer, plan_name="Baie vitrée", step_number=2, due_date=DUE,
        today=dt.date(2026, 11, 28), sender_name="Menuiserie Dupont",
        sender_email="contact@menuiserie.fr", constants={"company_phone": "01 23 45 67 89"},
    )


def render(body: str, subject: str = "Votre commande", **kw: object) -> Rendered:
    step = Step(plan="Baie vitrée", number=2, delay=15, unit="days", subject=subject, body=body)
    return render_message(step, make_context(**kw), locale="fr_FR")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ step.due_date|date }}", "27 novembre 2026"),
        ('{{ step.due_date|date("short") }}', "27/11/2026"),
        ('{{ step.due_date|date("EEEE d MMMM") }}', "vendredi 27 novembre"),
        ("{{ order.start_date|date }}", "1 octobre 2026"),
        ("{{ order.iso|date }}", "5 mars 2026"),
        ("{{ order.dayfirst|date }}", "5 mars 2026"),
        ("{{ today|date }}", "28 novembre 2026"),
    ],
)
def test_date_filter_formats_in_french(template: str, expected: str) -> None:
    """`date` formats dates, ISO text and day-first text in the locale (long by default)."""
    assert render(template, iso="2026-03-05", dayfirst="05/03/2026").text == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ order.amount|money }}", "1 234,50 €"),
        ("{{ order.dotted|money }}", "1 234,50 €"),
        ("{{ order.grouped|money }}", "1 234,50 €"),
        ("{{ 99|money }}", "99,00 €"),
        ('{{ order.amount|money("USD") }}', "1 234,50 $US"),
    ],
)
def test_money_filter_formats_amounts_in_french(template: str, expected: str) -> None:
    """`money` takes numbers or text with "," or "." and formats it as French currency."""
    out = render(template, dotted="1234.5", grouped="1.234,50").text
    assert spaces(out) == expected


def test_unknown_variable_is_a_render_error_naming_it() -> None:
    """A misspelt variable fails the message with a sentence naming the part and variable."""
    with pytest.raises(RenderError) as caught:
        render("Votre {{ order.prodcut }} arrive.")
    text = str(caught.value)
    assert 'the body uses "order.prodcut", which does not exist' in text
    assert "commplan variables" in text


def test_unknown_top_level_variable_in_subject_is_named() -> None:
    """An unknown constant in the subject is reported as the subject's problem."""
    with pytest.raises(RenderError, match='the subject uses "compny_phone"'):
        render("ok", subject="Appelez le {{ compny_phone }}")


def test_unknown_variable_inside_a_filter_still_fails() -> None:
    """A filter does not hide an unknown variable (StrictUndefined reaches it)."""
    with pytest.raises(RenderError, match='"order.livraison"'):
        render("{{ order.livraison|date }}")


@pytest.mark.parametrize(
    "template",
    ["{{ ''.__class__.__mro__ }}", "{{ order._values }}", "{{ customer.__init__.__globals__ }}"],
)
def test_sandbox_refuses_python_internals(template: str) -> None:
    """Templates cannot reach Python internals: the sandbox turns them into a RenderError."""
    with pytest.raises(RenderError, match="the body"):
        render(template)


def test_syntax_error_names_part_and_line() -> None:
    """A broken template names the part and the line of the mistake."""
    with pytest.raises(RenderError, match="the body has a mistake on line 2"):
        render("Bonjour\n{{ customer.name }")


def test_filter_error_is_a_render_error() -> None:
    """A value a filter cannot format fails the message, not the run."""
    with pytest.raises(RenderError, match='"Baie vitrée" is not a date'):
        render("{{ order.product|date }}")


def test_subject_with_line_breaks_is_folded_to_one_line() -> None:
    """Line breaks in data never reach the Subject header: folded to single spaces."""
    out = render("x", subject="  Bonjour {{ customer.name }}  ",
                 name="Éloïse\r\nBcc: evil@example.test\u2028Lefèvre\n")
    assert out.subject == "Bonjour Éloïse Bcc: evil@example.test Lefèvre"
    assert "\n" not in out.subject and "\r" not in out.subject


def test_html_escapes_values_while_text_keeps_them() -> None:
    """The text body keeps `<b>x</b>` as typed; the HTML shows it escaped, never as markup."""
    out = render("Produit : {{ order.product }}", product="<b>x</b>")
    assert out.text == "Produit : <b>x</b>"
    assert "&lt;b&gt;x&lt;/b&gt;" in out.html
    assert "<b>" not in out.html


def test_html_turns_lines_into_paragraphs_and_breaks() -> None:
    """Blank lines make paragraphs and single line breaks make <br> in the HTML version."""
    out = render("Bonjour,\nligne deux\n\nCordialement")
    assert "<p>Bonjour,<br>\nligne deux</p>" in out.html
    assert "<p>Cordialement</p>" in out.html
    assert out.html.startswith("<!DOCTYPE html>") and 'lang="fr"' in out.html


def test_template_syntax_inside_data_is_not_rendered_again() -> None:
    """A value containing `{{ … }}` is printed literally, never evaluated."""
    out = render("Note : {{ order.note }}", note="{{ sender.email }} {% if 1 %}x{% endif %}")
    assert out.text == "Note : {{ sender.email }} {% if 1 %}x{% endif %}"


def test_text_body_line_endings_are_normalised() -> None:
    """CRLF or CR typed in Excel become plain newlines in the text body."""
    assert render("a\r\nb\rc").text == "a\nb\nc"


def test_builtin_variables_and_constants_render() -> None:
    """Every SPEC variable family is available: customer, order, plan, step, sender, constants."""
    out = render(
        "{{ customer.name }}|{{ customer.telephone }}|{{ order.order_id }}|{{ plan.name }}|"
        "{{ step.number }}|{{ sender.name }}|{{ sender.email }}|{{ company_phone }}"
    )
    assert out.text == (
        "Éloïse Lefèvre|06 12 34 56 78|O-001|Baie vitrée|2|Menuiserie Dupont|"
        "contact@menuiserie.fr|01 23 45 67 89"
    )


def test_template_error_is_compile_only() -> None:
    """`template_error` reports syntax and unknown filters, and accepts unknown variables."""
    assert template_error("{{ anything.at_all }}") is None
    assert "line 1" in (template_error("{% if %}") or "")
    assert "No filter named 'nope'" in (template_error("{{ x|nope }}") or "")


def test_example_variables_lists_every_name_with_a_value() -> None:
    """`commplan variables` gets each variable name with an example value."""
    order = Order(order_id="O-001", customer_id="00123", plan="baie vitrée",
                  dates={"start_date": dt.date(2026, 10, 1)},
                  fields={"order_id": "O-001", "product": "Baie vitrée"})
    customer = Customer(customer_id="00123", name="Éloïse Lefèvre",
                        emails=("eloise@example.test",), fields={"name": "Éloïse Lefèvre"})
    rows = dict(example_variables(
        order=order, customer=customer, plan_name="Baie vitrée", step_number=1, due_date=DUE,
        today=dt.date(2026, 11, 1), sender_name="Menuiserie Dupont",
        sender_email="contact@menuiserie.fr", constants={"company_phone": "01 23 45 67 89"},
    ))
    assert rows["customer.name"] == "Éloïse Lefèvre"
    assert rows["customer.email"] == "eloise@example.test"
    assert rows["order.product"] == "Baie vitrée"
    assert rows["order.start_date"] == "2026-10-01"
    assert rows["step.due_date"] == "2026-11-27"
    assert rows["today"] == "2026-11-01"
    assert rows["company_phone"] == "01 23 45 67 89"
    assert {"plan.name", "step.number", "sender.name", "sender.email"} <= rows.keys()
