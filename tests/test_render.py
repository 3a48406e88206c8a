"""Rendering a plan step: sandbox, strict variables, filters, text and HTML."""

from __future__ import annotations

import datetime as dt
import html
import re

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
        customer_id="00123", name=name, emails=("eloise@example.com",),
        fields={"customer_id": "00123", "name": name, "email": "eloise@example.com",
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
    """A broken template names the part and the line of the mistake, in plain words."""
    with pytest.raises(RenderError, match='the body cannot be read: a "}}" is missing at the '
                       "end of line 2"):
        render("Bonjour\n{{ customer.name }")


def test_filter_error_is_a_render_error() -> None:
    """A value a filter cannot format fails the message, not the run."""
    with pytest.raises(RenderError, match='"Baie vitrée" is not a date'):
        render("{{ order.product|date }}")


def test_subject_with_line_breaks_is_folded_to_one_line() -> None:
    """Line breaks in data never reach the Subject header: folded to single spaces."""
    out = render("x", subject="  Bonjour {{ customer.name }}  ",
                 name="Éloïse\r\nBcc: evil@example.com\u2028Lefèvre\n")
    assert out.subject == "Bonjour Éloïse Bcc: evil@example.com Lefèvre"
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
    assert re.search(r"<p[^>]*>Bonjour,<br>\nligne deux</p>", out.html)
    assert re.search(r"<p[^>]*>Cordialement</p>", out.html)
    assert out.html.startswith("<!DOCTYPE html>") and 'lang="fr"' in out.html
    assert out.text == "Bonjour,\nligne deux\n\nCordialement"


def test_template_syntax_inside_data_is_not_rendered_again() -> None:
    """A value containing `{{ … }}` is printed literally, never evaluated."""
    out = render("Note : {{ order.note }}", note="{{ sender.email }} {% if 1 %}x{% endif %}")
    assert out.text == "Note : {{ sender.email }} {% if 1 %}x{% endif %}"


def test_text_body_line_endings_are_normalised() -> None:
    """CRLF or CR typed in Excel become plain newlines in the text body."""
    assert render("a\r\nb\rc").text == "a\nb\nc"


def test_builtin_variables_and_constants_render() -> None:
    """Every variable family is available: customer, order, plan, step, sender, constants."""
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
    assert 'the filter "nope", which does not exist' in (template_error("{{ x|nope }}") or "")


def test_example_variables_lists_every_name_with_a_value() -> None:
    """`commplan variables` gets each variable name with an example value."""
    order = Order(order_id="O-001", customer_id="00123", plan="baie vitrée",
                  dates={"start_date": dt.date(2026, 10, 1)},
                  fields={"order_id": "O-001", "product": "Baie vitrée"})
    customer = Customer(customer_id="00123", name="Éloïse Lefèvre",
                        emails=("eloise@example.com",), fields={"name": "Éloïse Lefèvre"})
    rows = dict(example_variables(
        order=order, customer=customer, plan_name="Baie vitrée", step_number=1, due_date=DUE,
        today=dt.date(2026, 11, 1), sender_name="Menuiserie Dupont",
        sender_email="contact@menuiserie.fr", constants={"company_phone": "01 23 45 67 89"},
    ))
    assert rows["customer.name"] == "Éloïse Lefèvre"
    assert rows["customer.email"] == "eloise@example.com"
    assert rows["order.product"] == "Baie vitrée"
    assert rows["order.start_date"] == "2026-10-01"
    assert rows["step.due_date"] == "2026-11-27"
    assert rows["today"] == "2026-11-01"
    assert rows["company_phone"] == "01 23 45 67 89"
    assert {"plan.name", "step.number", "sender.name", "sender.email"} <= rows.keys()


# ---------------------------------------------------------------- Markdown bodies


def content_of(page: str) -> str:
    """The body's HTML inside the layout."""
    found = re.search(r'class="content"[^>]*>(.*?)</td>', page, re.S)
    assert found
    return found.group(1)


def test_markdown_bold_italic_lists_and_links_reach_both_parts() -> None:
    """`**gras**`, `*italique*`, lists and `[texte](url)` become HTML, and plain text."""
    out = render("Votre **commande** est *prête*.\n\n- retrait\n- pose\n\n"
                 "1. un\n2. deux\n\n[Suivre](https://shop.fr/suivi)")
    assert re.search(r"<strong[^>]*>commande</strong>", out.html)
    assert re.search(r"<em[^>]*>prête</em>", out.html)
    assert re.search(r"<li[^>]*>retrait</li>", out.html) and "<ol" in out.html
    assert re.search(r'<a href="https://shop.fr/suivi"[^>]*>Suivre</a>', out.html)
    assert out.text == ("Votre commande est prête.\n\n- retrait\n- pose\n\n1. un\n2. deux\n\n"
                        "Suivre (https://shop.fr/suivi)")


def test_bare_web_and_mail_addresses_become_links() -> None:
    """A bare web or mail address typed in a body is a link; the text part shows it once."""
    out = render("Voir www.shop.fr, https://shop.fr/aide ou contact@shop.fr")
    assert '<a href="http://www.shop.fr"' in out.html
    assert '<a href="http://shop.fr"' in render("Voir shop.fr.").html
    assert '<a href="https://shop.fr/aide"' in out.html
    assert '<a href="mailto:contact@shop.fr"' in out.html
    assert out.text == "Voir www.shop.fr, https://shop.fr/aide ou contact@shop.fr"


def test_raw_html_typed_in_a_body_is_shown_as_text() -> None:
    """HTML typed by staff is shown as typed, never interpreted."""
    out = render('Cliquez <a href="https://x.fr">ici</a> <img src=x onerror=alert(1)>')
    content = content_of(out.html)
    assert "<img" not in content and '<a href="https://x.fr">ici' not in content
    assert "Cliquez &lt;a href=" in content and "&gt;ici&lt;/a&gt;" in content
    assert "&lt;img src=x onerror=alert(1)&gt;" in content
    assert out.text == 'Cliquez <a href="https://x.fr">ici</a> <img src=x onerror=alert(1)>'


@pytest.mark.parametrize(
    "value",
    ["<script>alert(1)</script>", "**x**", "[a](javascript:alert(1))", "www.evil.example",
     "pirate@evil.example", "# Titre\n- item\n\n    code", "&amp; &lt;b&gt;", "_x_ `y` \\*"],
)
def test_a_workbook_value_stays_literal_text_in_both_parts(value: str) -> None:
    """A customer's cell never becomes markup, a link or an entity: shown as typed."""
    out = render("Bonjour {{ customer.name }} !", name=value)
    shown = " ".join(line.strip() for line in value.splitlines() if line.strip())
    assert out.text.replace("\n", " ") == f"Bonjour {shown} !"
    content = content_of(out.html)
    for tag in ("<a ", "<script", "<strong", "<em", "<h1", "<li", "<code", "<pre"):
        assert tag not in content
    assert html.unescape(re.sub(r"<[^>]+>", "", content)).replace("\n", " ").strip() == \
        f"Bonjour {shown} !"


def test_a_value_inside_a_link_address_completes_it() -> None:
    """`[texte](https://…/{{ order.order_id }})` links to the address with the value."""
    out = render("[Suivre](https://shop.fr/suivi/{{ order.order_id }})")
    assert '<a href="https://shop.fr/suivi/O-001"' in out.html
    assert out.text == "Suivre (https://shop.fr/suivi/O-001)"


def test_a_javascript_link_is_never_made() -> None:
    """A `javascript:` address typed in a body is shown as text, not made a link."""
    out = render("[clic](javascript:alert(1))")
    assert "<a " not in content_of(out.html)


def test_the_html_part_is_never_the_text_with_br_and_the_text_never_html() -> None:
    """The text part is plain text (no tags); the HTML is a whole laid-out document."""
    out = render("Bonjour,\nà **bientôt** sur https://shop.fr")
    assert out.text == "Bonjour,\nà bientôt sur https://shop.fr"
    assert "<" not in out.text
    assert "max-width: 600px" in out.html and "<table" in out.html


def test_site_constants_and_sender_are_markdown_like_the_template() -> None:
    """The staff's constants and sender address become links; a customer's cell does not."""
    context = make_context(name="www.client.example")
    context.update(build_context(
        order=Order(order_id="O-001", customer_id="00123", plan="p", dates={}, fields={}),
        customer=Customer(customer_id="00123", name="x", emails=(), fields={}),
        plan_name="p", step_number=1, due_date=DUE, today=DUE, sender_name="Dupont",
        sender_email="contact@menuiserie.fr",
        constants={"company_website": "www.menuiserie.fr", "hours": "**9 h - 18 h**"},
    ))
    context["customer"] = make_context(name="www.client.example")["customer"]
    step = Step(plan="p", number=1, delay=1, unit="days", subject="s",
                body="{{ company_website }} {{ sender.email }} {{ hours }} {{ customer.name }}")
    out = render_message(step, context, locale="fr_FR")
    content = content_of(out.html)
    assert '<a href="http://www.menuiserie.fr"' in content
    assert '<a href="mailto:contact@menuiserie.fr"' in content
    assert re.search(r"<strong[^>]*>9 h - 18 h</strong>", content)
    assert "www.client.example" in content and "http://www.client.example" not in content
    assert out.text == "www.menuiserie.fr contact@menuiserie.fr 9 h - 18 h www.client.example"


HUGE = [
    "{{ 'x' * 2000000000 }}",
    "{{ 2000000000 * 'x' }}",
    "{{ '%2000000000s' % 'a' }}",
    "{{ '{:>2000000000}'.format(1) }}",
    "{{ '{:>{w}}'.format(1, w=2000000000) }}",
    "{{ 'a'|center(2000000000) }}",
    "{{ 'a'.ljust(2000000000) }}",
    "{{ 9 ** 99999999 }}",
]


@pytest.mark.parametrize("template", HUGE)
def test_a_template_building_a_huge_text_stops_with_a_clear_error(template: str) -> None:
    """A template that would build gigabytes stops at once, in a sentence, not in memory."""
    with pytest.raises(RenderError, match="longer than 1 000 000 characters"):
        render(template)


def test_ordinary_repetition_and_padding_still_work() -> None:
    """Short repetition, padding and formats are untouched by the size bound."""
    assert "ababab" in render("{{ 'ab' * 3 }}").text
    assert "[    a]" in render("[{{ '%5s' % 'a' }}]").text
