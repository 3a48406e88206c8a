"""A real SMTP server (aiosmtpd) on 127.0.0.1 for tests, with faults on demand."""

from __future__ import annotations

import email
import email.policy
import socket
import threading
import time
import warnings
from dataclasses import dataclass, field
from email.message import EmailMessage

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


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
    # MAIL commands (counted from 1 over all connections) at which the server drops the
    # connection instead of answering, e.g. {4}: a server that hangs up mid-batch.
    drop_at_mail: set[int] = field(default_factory=set)
    mail_count: int = 0
    connections: int = 0  # SMTP connections opened by clients since start()
    logins: list[str] = field(default_factory=list)  # users who logged in successfully
    # recipient -> SMTP reply to give once the whole message is in, e.g. "554 5.7.1 spam"
    data_replies: dict[str, str] = field(default_factory=dict)
    # recipients whose message the server takes whole, then hangs up without answering
    hang_up_after_data: set[str] = field(default_factory=set)
    # recipients whose message the server starts to read after its 354, then hangs up
    # while it is still being uploaded (before the final dot)
    hang_up_in_data: set[str] = field(default_factory=set)
    # recipient -> seconds the server waits before its reply to RCPT TO for it
    slow_rcpt: dict[str, float] = field(default_factory=dict)
    # recipient -> seconds the server waits before its final reply to that message
    slow_final_reply: dict[str, float] = field(default_factory=dict)
    # replies given at MAIL FROM, in turn, before the server accepts again (a throttling
    # server: ["452 4.5.3 too many messages", ...])
    mail_replies: list[str] = field(default_factory=list)
    # the reply to every AUTH instead of checking it, e.g. "454 4.7.0 try again later"
    auth_reply: str = ""

    async def handle_MAIL(self, server, session, envelope, address, mail_options):  # noqa: N802
        with self.lock:
            self.mail_count += 1
            drop = self.mail_count in self.drop_at_mail
        if drop:
            server.transport.close()
            return "421 4.4.2 closing connection"
        with self.lock:
            refusal = self.mail_replies.pop(0) if self.mail_replies else None
        if refusal:
            return refusal
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):  # noqa: N802
        if self.slow_rcpt.get(address.lower()):
            import asyncio

            await asyncio.sleep(self.slow_rcpt[address.lower()])
        reply = self.rcpt_replies.get(address.lower())
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        if self.delay:
            import asyncio

            await asyncio.sleep(self.delay)
        rcpts = [a.lower() for a in envelope.rcpt_tos]
        slow = max((self.slow_final_reply.get(a, 0.0) for a in rcpts), default=0.0)
        if slow:
            import asyncio

            await asyncio.sleep(slow)
        if any(a in self.hang_up_after_data for a in rcpts):
            server.transport.close()
            return "421 4.4.2 closing connection"
        for address in rcpts:
            if address in self.data_replies:
                return self.data_replies[address]
        with self.lock:
            self.received.append(
                Received(envelope.mail_from, list(envelope.rcpt_tos), bytes(envelope.content))
            )
        return "250 Message accepted for delivery"


@dataclass
class OAuthHandler(Handler):
    """A Handler that also offers `AUTH XOAUTH2` (Microsoft 365, Gmail) and checks tokens.

    `tokens` maps a user to the one access token accepted for it; every decoded XOAUTH2
    string received is kept in `xoauth2_seen`. A refused token gets `refusal`; with
    `google_style` it first gets a 334 challenge holding a JSON error, as Gmail does.
    """

    tokens: dict[str, str] = field(default_factory=dict)
    xoauth2_seen: list[str] = field(default_factory=list)
    refusal: str = "535 5.7.3 Authentication unsuccessful"
    google_style: bool = False

    async def auth_XOAUTH2(self, server, args):  # noqa: N802
        import base64
        import binascii

        from aiosmtpd.smtp import MISSING, AuthResult

        if len(args) == 1:
            blob = await server.challenge_auth("")
            if blob is MISSING:
                return AuthResult(success=False, handled=True)
        else:
            try:
                blob = base64.b64decode(args[1], validate=True)
            except binascii.Error:
                await server.push("501 5.5.2 Can't decode base64")
                return AuthResult(success=False, handled=True)
        text = blob.decode("utf-8", "replace")
        with self.lock:
            self.xoauth2_seen.append(text)
        fields = dict(part.split("=", 1) for part in text.split("\x01") if "=" in part)
        user = fields.get("user", "")
        if user in self.tokens and fields.get("auth") == f"Bearer {self.tokens[user]}":
            self.logins.append(user)
            return AuthResult(success=True, auth_data=user)
        if self.google_style:
            await server.challenge_auth(b'{"status":"400","schemes":"Bearer",'
                                        b'"scope":"https://mail.google.com/"}')
        return AuthResult(success=False, handled=False, message=self.refusal)


class _FaultySMTP(SMTP):
    """aiosmtpd's SMTP session, able to hang up in the middle of a message's upload."""

    async def smtp_DATA(self, arg: str) -> None:  # noqa: N802
        handler = self.event_handler
        rcpts = [a.lower() for a in (self.envelope.rcpt_tos if self.envelope else [])]
        if not any(a in handler.hang_up_in_data for a in rcpts):
            await super().smtp_DATA(arg)
            return
        await self.push("354 End data with <CR><LF>.<CR><LF>")
        self.transport.abort()  # the line goes dead while the client uploads the message


class _CountingController(Controller):
    """A Controller that counts the SMTP connections it serves in `handler.connections`."""

    def factory(self):
        with self.handler.lock:
            self.handler.connections += 1
        with warnings.catch_warnings():  # AUTH required without TLS: on purpose here
            warnings.simplefilter("ignore", UserWarning)
            return _FaultySMTP(self.handler, **self.SMTP_kwargs)


def _authenticator(credentials: dict[str, str], logins: list[str], handler: Handler):
    from aiosmtpd.smtp import AuthResult, LoginPassword

    def check(server, session, envelope, mechanism, auth_data) -> AuthResult:
        if handler.auth_reply:
            return AuthResult(success=False, handled=False, message=handler.auth_reply)
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        user = auth_data.login.decode()
        ok = credentials.get(user) == auth_data.password.decode()
        if ok:
            logins.append(user)
        return AuthResult(success=ok, handled=False)

    return check


class SMTPServer:
    """Start with `with SMTPServer() as srv:`; `srv.port`, `srv.received`.

    `credentials={"user": "password"}` makes the server offer AUTH over plain TCP and check
    it; successful logins are listed in `srv.handler.logins`. `xoauth2={"user": "token"}`
    also offers AUTH XOAUTH2 (see OAuthHandler, whose fields may be passed as keywords).
    (AUTH is offered, not required: requiring it without TLS makes aiosmtpd warn on every
    connection.)
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        credentials: dict[str, str] | None = None,
        xoauth2: dict[str, str] | None = None,
        require_auth: bool = False,
        starttls_cert: tuple[str, str] | None = None,
        **handler_kw,
    ) -> None:
        if xoauth2 is not None:  # offer AUTH XOAUTH2 too, accepting these user -> token
            self.handler: Handler = OAuthHandler(tokens=dict(xoauth2), **handler_kw)
        else:
            self.handler = Handler(**handler_kw)
        self.port = port or free_port()
        auth_kw: dict = {}
        if starttls_cert is not None:  # offer STARTTLS, and take no login before it
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*starttls_cert)
            auth_kw.update(tls_context=context, require_starttls=True)
        if credentials is not None or xoauth2 is not None:
            auth_kw.update(
                authenticator=_authenticator(credentials or {}, self.handler.logins,
                                             self.handler),
                auth_require_tls=starttls_cert is not None,
                auth_required=require_auth,  # no MAIL before a successful AUTH
            )
        self.controller = _CountingController(
            self.handler, hostname="127.0.0.1", port=self.port, ready_timeout=10, **auth_kw
        )

    @property
    def received(self) -> list[Received]:
        return self.handler.received

    @property
    def connections(self) -> int:
        return self.handler.connections

    def start(self) -> SMTPServer:
        self.controller.start()
        self.handler.connections = 0  # forget the Controller's own readiness probe
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


def self_signed_certificate(folder) -> tuple[str, str]:
    """A certificate for 127.0.0.1 and its key, as PEM files in `folder` (cert, key): a
    client trusts it when SSL_CERT_FILE names the certificate."""
    import datetime as dt
    import ipaddress
    from pathlib import Path

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    folder = Path(folder)
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return str(cert_path), str(key_path)


class SilentServer:
    """A TCP server that accepts connections and never says a word (a hung mail server).

    `with SilentServer() as srv:` then connect to `srv.port`.
    """

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.clients: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.clients.append(conn)  # kept open, never written to

    def __enter__(self) -> SilentServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        for conn in self.clients:
            conn.close()
        self.sock.close()
