"""The demo's mails as SpamAssassin's local rules judge them (where spamassassin is installed)."""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import subprocess
from concurrent.futures import ThreadPoolExecutor

import openpyxl
import pytest

from commplan_xl.cli import main
from commplan_xl.excel.starter import DEMO_SERVER_DOMAIN, init_home
from commplan_xl.run import batch
from tests.test_layout import png

pytestmark = pytest.mark.skipif(shutil.which("spamassassin") is None,
                                reason="spamassassin is not installed")

IMAGE_RULES = re.compile(r"HTML_IMAGE_ONLY_\d+")


def spam_tests(message: bytes, home) -> dict[str, float]:
    """The rules `spamassassin -L -t` hits on one message, with their points."""
    done = subprocess.run(
        ["spamassassin", "-L", "-t", "--cf", "add_header all Tests _TESTSSCORES(,)_"],
        input=message, capture_output=True, check=True, timeout=120,
        env={**os.environ, "HOME": str(home)})
    header = re.search(rb"^X-Spam-Tests: (.*(?:\r?\n[ \t].*)*)", done.stdout, re.M)
    assert header
    pairs = re.sub(rb"\s+", b"", header.group(1)).decode().split(",")
    return {name: float(points) for name, _, points in (p.partition("=") for p in pairs if p)}


def add_settings(workbook, **values: str) -> None:
    wb = openpyxl.load_workbook(workbook)
    ws = next(w for w in wb.worksheets if w.title in ("Settings", "Paramètres"))
    rows = {row[0].value: row for row in ws.iter_rows(min_row=2)}
    for key, value in values.items():
        if key in rows:
            rows[key][1].value = value
        else:
            ws.append([key, value])
    wb.save(workbook)


def test_demo_mails_pass_spamassassin_local_rules(tmp_path, smtp_server, monkeypatch):
    """The demo's mails, with and without a logo and signature, score below 1.0 (the logo's
    image-to-text rules aside), with no MIME rule and no HTML rule beyond HTML_MESSAGE and
    HTML_IMAGE_ONLY_*."""
    for var, value in (("COMMPLAN_SMTP_HOST", "127.0.0.1"), ("COMMPLAN_SMTP_PORT",
                       str(smtp_server.port)), ("COMMPLAN_SMTP_SECURITY", "none"),
                       ("COMMPLAN_SMTP_USER", "")):
        monkeypatch.setenv(var, value)
    home = tmp_path / "home"
    workbook = init_home(home, today=dt.date(2026, 3, 1), demo_domain=DEMO_SERVER_DOMAIN)
    site = batch.load_site(home, workbook, environ={})
    first = {}
    for order in site.model.orders:
        first.setdefault(order.plan, order)
    # The first two steps of each demo plan: with and without attachments, short and long.
    steps = [(order.order_id, step.number) for plan, order in first.items()
             for step in site.model.plans[plan].steps[:2]]
    assert len(steps) >= 4

    def send_all(steps: list[tuple[str, int]]) -> list[bytes]:
        start = len(smtp_server.received)
        for order_id, number in steps:
            assert main(["preview", order_id, str(number), "--to", "essai@commplan.test",
                         "--home", str(home)]) == 0
        return [got.data for got in smtp_server.received[start:]]

    plain = send_all(steps[:1])  # without a logo: the whole score counts
    (home / "attachments" / "logo.png").write_bytes(png(400, 100))
    add_settings(workbook, logo="logo.png",
                 signature="L'équipe **{{ sender.name }}** – {{ company_website }}")
    with_logo = send_all(steps)
    assert all(b"Content-ID: <logo." in m for m in with_logo)

    # One spamassassin per mail (about 1 s each, two at a time): its --mbox mode mixes up
    # the results of successive messages.
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda m: spam_tests(m, tmp_path), plain + with_logo))
    for number, hits in enumerate(results):
        names = set(hits)
        assert not {n for n in names if n.startswith("MIME_")}, (number, hits)
        html_rules = {n for n in names if n.startswith("HTML_")}
        assert html_rules - {"HTML_MESSAGE"} <= {n for n in names if IMAGE_RULES.fullmatch(n)}
        beside_logo = sum(p for n, p in hits.items() if not IMAGE_RULES.fullmatch(n))
        assert beside_logo < 1.0, (number, hits)
        if number < len(plain):
            assert sum(hits.values()) < 1.0, (number, hits)
