"""Mails that cannot be built wait (an empty cell, a template problem) and never supersede
a lower step; `due`, `run`, `check` and the Forecast agree on it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from commplan_xl.cli import main
from commplan_xl.mail.render import WaitingForValue, build_context, render_message
from commplan_xl.model import Customer, Order, Step
from tests.builders import DEFAULT_ORDERS, DEFAULT_PLANS, DEFAULT_SETTINGS, make_workbook
from tests.test_run import sentlog as run_sentlog

FIRST_RUN = "2026-03-12"  # O1001: step 1 (03-07) and step 2 (03-12) are both due


def settings_for(server) -> list[dict]:
    rows = [dict(r) for r in DEFAULT_SETTINGS if r["key"] != "smtp_port"]
    return [*rows, {"key": "smtp_port", "value": server.port}]


def plans_with_step2(body: str, subject: str = "Livraison de {{ order.order_id }}") -> list:
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[1] = {**plans[1], "delay": 10, "subject": subject, "body": body}
    return plans


def orders_with_delivery(delivery: dt.date | None) -> list[dict]:
    orders = [dict(o) for o in DEFAULT_ORDERS]
    orders[0]["date_de_livraison"] = delivery
    orders[1]["date_de_livraison"] = dt.date(2026, 4, 20)
    return orders


def cli(home: Path, *args: str) -> int:
    return main([*args, "--home", str(home)])


def sentlog(home: Path) -> list[tuple]:
    """(order, step, status) of each row of the log sheet (the Journal: a French workbook)."""
    return [(r["order_id"], r["step"], r["status"]) for r in run_sentlog(home)]


def subjects(server) -> list[str]:
    return [r.message["Subject"] for r in server.received]


DELIVERY_BODY = ("Bonjour {{ customer.name }},\n"
                 "livraison prévue le {{ order.date_de_livraison|date }}.")


def test_empty_delivery_date_holds_the_step_until_the_cell_is_filled(
        tmp_path, smtp_server, clean_env, capsys):
    """An empty cell a template prints holds its step (not sent, not failed, not superseding
    the step below); `due` and `check` name the order and the column; once the cell is
    filled, the next run sends it."""
    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2(DELIVERY_BODY), orders=orders_with_delivery(None))
    assert cli(tmp_path, "due", "--today", FIRST_RUN, "--csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "O1001,C001,Baie vitrée,1,2026-03-07,send,due" in lines
    assert "O1001,C001,Baie vitrée,2,2026-03-12,wait,waiting for date_de_livraison" in lines

    assert cli(tmp_path, "run", "--today", FIRST_RUN) == 0
    assert "attend date_de_livraison" in capsys.readouterr().out  # a fr_FR workbook
    assert subjects(smtp_server) == ["Votre commande O1001 est en cours de traitement"]
    assert sentlog(tmp_path) == [("O1001", 1, "sent")]  # step 2: neither failed nor skipped

    assert cli(tmp_path, "check", "--today", FIRST_RUN) == 1
    out = capsys.readouterr().out
    assert ("Orders!G2 (date_de_livraison) : la commande O1001, étape 2 de « Baie vitrée » "
            "(échéance 12/03/2026) attend date_de_livraison : la cellule est vide.") in out

    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2(DELIVERY_BODY),
                  orders=orders_with_delivery(dt.date(2026, 4, 2)))
    assert cli(tmp_path, "run", "--today", "2026-03-13") == 0
    assert subjects(smtp_server)[1:] == ["Livraison de O1001"]
    text = smtp_server.received[1].message.get_body(preferencelist=("plain",)).get_content()
    assert "livraison prévue le 2 avril 2026." in text


def test_a_waiting_message_is_missed_after_catch_up(tmp_path, smtp_server, clean_env, capsys):
    """A message waiting for a value is counted missed once past catch-up from its due
    date, like any message never sent."""
    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2(DELIVERY_BODY), orders=orders_with_delivery(None))
    assert cli(tmp_path, "due", "--today", "2026-03-19", "--csv") == 0
    assert "O1001,C001,Baie vitrée,2,2026-03-12,wait,waiting for date_de_livraison" in \
        capsys.readouterr().out.splitlines()
    assert cli(tmp_path, "due", "--today", "2026-03-20", "--csv") == 0
    assert "O1001,C001,Baie vitrée,2,2026-03-12,skip,missed" in \
        capsys.readouterr().out.splitlines()


def test_template_error_in_the_highest_due_step_lets_the_step_below_go(
        tmp_path, smtp_server, clean_env, capsys):
    """A misspelt variable in the highest due step makes it wait (recorded failed, retried
    once fixed): the step below is sent instead of being superseded, as `due` said."""
    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2("Votre {{ order.prodcut }} arrive."))
    assert cli(tmp_path, "due", "--today", FIRST_RUN, "--csv") == 0
    lines = capsys.readouterr().out.splitlines()
    assert "O1001,C001,Baie vitrée,1,2026-03-07,send,due" in lines
    assert ("O1001,C001,Baie vitrée,2,2026-03-12,wait,\"le message utilise « order.prodcut », "
            "qui n'existe pas (vérifiez l'orthographe ; « commplan variables » les liste)\""
            ) in lines
    assert cli(tmp_path, "run", "--today", FIRST_RUN) == 1
    assert subjects(smtp_server) == ["Votre commande O1001 est en cours de traitement"]
    assert sentlog(tmp_path) == [("O1001", 1, "sent"), ("O1001", 2, "failed")]


def test_check_reports_every_problem_of_a_plan_no_order_uses(tmp_path, clean_env, capsys):
    """`check` reads every active step, used by an order or not, and reports each problem
    of a row at once (subject and body), each at its cell, syntax errors in plain words."""
    plans = [dict(p) for p in DEFAULT_PLANS]
    plans.append({"plan": "Volets", "step": 1, "delay": 3, "unit": "days",
                  "subject": "Vos volets {{ order.prodcut }}",
                  "body": "Bonjour {{ customer.name }},\nvos volets {{ order.product"})
    plans.append({"plan": "Volets", "step": 2, "delay": 5, "unit": "days",
                  "subject": "Vos volets", "body": "{{ magasin }} {{ order.product|dat }}"})
    make_workbook(tmp_path, plans=plans)
    assert cli(tmp_path, "check") == 1
    out = capsys.readouterr().out
    assert ("Plans!E5 (subject) : l'objet utilise « order.prodcut », qui n'existe pas "
            "(vérifiez l'orthographe ; « commplan variables » les liste)") in out
    assert ("Plans!F5 (body) : le message est illisible : il manque un « }} » à la fin de la "
            "ligne 2") in out
    assert "Plans!F6 (body) : le message utilise « magasin », qui n'existe pas" in out
    assert "Plans!F6 (body) : le message utilise le filtre « dat », qui n'existe pas" in out
    assert "unexpected end of template" not in out and "expected token" not in out


def _context(delivery: object) -> dict:
    order = Order(order_id="O1", customer_id="C1", plan="p",
                  fields={"order_id": "O1", "date_de_livraison": delivery})
    customer = Customer(customer_id="C1", name="Alice", emails=("a@example.test",),
                        fields={"name": "Alice"})
    day = dt.date(2026, 3, 2)
    return build_context(order=order, customer=customer, plan_name="P", step_number=1,
                         due_date=day, today=day, sender_name="S", sender_email="s@x.test",
                         constants={})


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ('Livraison {{ order.date_de_livraison|default("bientôt") }}.', "Livraison bientôt."),
        ("{% if order.date_de_livraison %}Le {{ order.date_de_livraison|date }}{% else %}"
         "Date à venir{% endif %}.", "Date à venir."),
        ('{{ order.date_de_livraison or "bientôt" }}', "bientôt"),
    ],
)
def test_a_fallback_makes_an_empty_cell_fine(body: str, expected: str) -> None:
    """`|default`, `{% if %}` and `or` give an empty cell a fallback: the mail is made."""
    step = Step(plan="P", number=1, delay=0, unit="days", subject="S", body=body)  # type: ignore[arg-type]
    assert render_message(step, _context(""), locale="fr_FR").text == expected


@pytest.mark.parametrize("body", ["Le {{ order.date_de_livraison }}.",
                                  "Le {{ order.date_de_livraison|date }}.",
                                  "{{ order.date_de_livraison ~ 'x' }}"])
def test_an_empty_cell_printed_without_fallback_waits(body: str) -> None:
    """Printing, formatting or joining an empty cell makes the mail wait for that column."""
    step = Step(plan="P", number=1, delay=0, unit="days", subject="S", body=body)  # type: ignore[arg-type]
    with pytest.raises(WaitingForValue, match="waiting for date_de_livraison"):
        render_message(step, _context("  "), locale="fr_FR")


def test_forecast_names_the_order_and_the_column_a_mail_waits_for(
        tmp_path, smtp_server, clean_env):
    """The Forecast lists a mail waiting for an empty cell once, "⚠ waiting for X"."""
    from commplan_xl.run import batch
    from commplan_xl.run.reports import forecast_rows

    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2(DELIVERY_BODY), orders=orders_with_delivery(None))
    site = batch.load_site(tmp_path)
    rows = forecast_rows(site, {}, today=dt.date(2026, 3, 10), days=5)
    waiting = [(r.order_id, r.step, r.date, r.subject) for r in rows if r.subject[0] == "⚠"]
    assert waiting == [("O1001", 2, dt.date(2026, 3, 12), "⚠ waiting for date_de_livraison")]


def test_preview_of_a_mail_waiting_for_a_value_says_which_cell(
        tmp_path, smtp_server, clean_env, capsys):
    """preview of a mail whose cell is empty says which column it waits for."""
    make_workbook(tmp_path, settings=settings_for(smtp_server),
                  plans=plans_with_step2(DELIVERY_BODY), orders=orders_with_delivery(None))
    assert cli(tmp_path, "preview", "O1001", "2") == 1
    assert ("La commande O1001 étape 2 ne peut pas encore être faite : elle attend "
            "date_de_livraison, vide pour cette commande.") in capsys.readouterr().err


def test_an_empty_customer_cell_read_by_its_french_name_holds_the_mail(
        tmp_path, smtp_server, clean_env, capsys):
    """`client.ville` is a cell too: empty for one customer, that customer's mail waits
    (check points at the Customers cell) while the other customer's goes."""
    from tests.builders import DEFAULT_CUSTOMERS

    plans = [dict(p) for p in DEFAULT_PLANS]
    plans[0] = {**plans[0], "body": "Votre magasin de {{ client.ville }} vous attend."}
    customers = [{**DEFAULT_CUSTOMERS[0], "ville": None}, {**DEFAULT_CUSTOMERS[1], "ville": "Lyon"}]
    make_workbook(tmp_path, settings=settings_for(smtp_server), plans=plans,
                  customers=customers)
    assert cli(tmp_path, "run", "--today", "2026-03-14") == 0
    assert [r.rcpt_tos for r in smtp_server.received] == [["bruno@example.test"]]
    assert cli(tmp_path, "check", "--today", "2026-03-14") == 1
    assert ("Customers!D2 (ville) : la commande O1001, étape 1 de « Baie vitrée » (échéance "
            "07/03/2026) attend ville : la cellule est vide.") in capsys.readouterr().out
