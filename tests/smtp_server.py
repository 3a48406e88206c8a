"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests, with faults on demand."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Received:
    mail_from: str
    rcpt_tos: list[str]
    data: bytes

    @property
    def message(self) -> EmailMessage:
        return email.message_from_bytes(self.data, policy=email.policy.default)  # type: ignore[return-value]


@dataclass
class Handler:
    received: list[Received] = field(default_factory=list)
    # address -> SMTP reply to give at RCPT TO, e.g. {"bad@x.fr": "550 5.1.1 no such user"}
    rcpt_replies: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds to wait before accepting DATA (a slow server)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 Message accepted for delivery"


class SMTPServer:
    """Start with `with SMTPServer() as srv:`; `srv.port`, `srv.received`."""

    def __init__(self, *, port: int | None = None, **handler_kw) -> None:
        self.handler = Handler(**handler_kw)
        self.port = port or free_port()
        self.controller = Controller(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    def start(self) -> SMTPServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()

    def __enter__(self) -> SMTPServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        end = time.monotonic() + timeout
        while len(self.received) < count and time.monotonic() < end:
            time.sleep(0.02)
