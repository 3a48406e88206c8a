"""`commplan demo`: the whole flow on demo data against a local SMTP server it starts itself."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import shutil
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from commplan_xl import i18n
from commplan_xl.i18n import _, ngettext

MARKER = ".commplan-demo"


@dataclass
class Inbox:
    """What the embedded server received, in order."""

    messages: list[email.message.EmailMessage] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        with self.lock:
            self.messages.append(msg)  # type: ignore[arg-type]
        return "250 Message accepted for delivery"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _prepare_home(home: Path) -> None:
    if home.exists() and any(home.iterdir()):
        if not (home / MARKER).exists():
            from commplan_xl.problems import CommplanError

            raise CommplanError(_(
                "{home} is not empty and was not made by `commplan demo`: give another folder "
                "with --home.").format(home=home))
        shutil.rmtree(home)
    home.mkdir(parents=True, exist_ok=True)
    (home / MARKER).write_text("made by commplan demo; deleted by the next demo\n")


def run_demo(home: Path, *, days: int | None = None, out: Callable[[str], None] = print,
             today: dt.date | None = None) -> int:
    """Create a demo home, start a local SMTP server, run the batch every simulated morning."""
    from aiosmtpd.controller import Controller
    from babel.dates import format_date

    from commplan_xl.excel.names import tool_sheet
    from commplan_xl.excel.starter import DEMO_SERVER_DOMAIN, init_home
    from commplan_xl.run import batch

    today = today or dt.date.today()
    _prepare_home(home)
    workbook = init_home(home, today=today, demo_domain=DEMO_SERVER_DOMAIN)
    inbox = Inbox()
    port = _free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, ready_timeout=10)
    controller.start()
    environ = {"COMMPLAN_SMTP_HOST": "127.0.0.1", "COMMPLAN_SMTP_PORT": str(port),
               "COMMPLAN_SMTP_SECURITY": "none", "COMMPLAN_SMTP_USER": ""}
    out(_("Demo home: {home}").format(home=home))
    out(_("A local mail server listens on 127.0.0.1:{port}; nothing leaves this computer.")
        .format(port=port))
    status = 0
    try:
        site = batch.load_site(home, workbook, environ=environ)
        i18n.set_language(site.settings.locale)
        starts = [d for o in site.model.orders for d in [o.dates.get("start_date")] if d]
        first = min(starts) if starts else today
        if days is None:  # from the first order until two months ahead: every plan plays out
            days = (today - first).days + 61
        totals = {"sent": 0, "skipped": 0, "failed": 0}
        for offset in range(days):
            day = first + dt.timedelta(days=offset)
            seen = len(inbox.messages)
            site = batch.load_site(home, workbook, environ=environ)
            report = batch.run(site, today=day)
            totals["sent"] += report.sent
            totals["skipped"] += report.skipped
            totals["failed"] += report.failed
            if report.failed or report.uncertain:
                status = 1
            arrived = inbox.messages[seen:]
            if not arrived and not report.skipped:
                continue
            weekday = format_date(day, "EEEE dd/MM/yyyy", locale=i18n.current())
            line = ngettext("{day}: {n} mail arrived", "{day}: {n} mails arrived",
                            len(arrived)).format(day=weekday, n=len(arrived))
            if report.skipped:
                line += _(", {n} skipped").format(n=report.skipped)
            out("\n" + line)
            for msg in arrived:
                names = [p.get_filename() for p in msg.iter_attachments()]
                extra = ("  " + _("[attached: {names}]").format(
                    names=", ".join(n for n in names if n))) if names else ""
                out(_("  to {to}: {subject}").format(to=msg["To"], subject=msg["Subject"])
                    + extra)
            for line in report.failures:
                out(_("  failed: {detail}").format(detail=line))
        out("\n" + _("{sent} mails sent, {skipped} skipped, {failed} failed over {days} "
                     "simulated mornings.").format(sent=totals["sent"],
                                                  skipped=totals["skipped"],
                                                  failed=totals["failed"], days=days))
        journal = batch.site_language(site)
        out(_("Open {workbook} (sheet {sheet}) and the folders in {archive} to see them.")
            .format(workbook=workbook, sheet=tool_sheet("sentlog", journal),
                    archive=home / "archive"))
    finally:
        controller.stop()
    return status
