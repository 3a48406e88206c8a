"""A real IMAP server for tests: Dovecot (Debian's `dovecot-imapd`) on a temporary maildir.

Why Dovecot rather than a pure-Python server (mail-devel, pymap): it is the IMAP server most
hosting providers run, so our client is checked against real protocol behaviour: UIDVALIDITY
kept in its own files and changed when a folder is recreated, `BODY.PEEK` leaving `\\Seen`
alone, `UID MOVE`, STARTTLS and implicit TLS, modified UTF-7 folder names, and
`AUTHENTICATE XOAUTH2` (Dovecot 2.3 checks the bearer token as the user's password, so a
token can be tested without an identity provider). It costs one small apt package
(`apt-get install -y dovecot-imapd`, a few seconds, installed by .ci/run); when it is
missing, the IMAP tests are skipped with that line as the reason.

The server runs from a config file written here, never as root: when the tests run as root
(CI) the whole Dovecot runs as the `dovecot` system user, in a temporary folder it owns.
Every user name exists, with the password "pw-<user>" (a static password database: a
password file would be re-read at most once a second). A self-signed certificate for
127.0.0.1 is made at start; `client_context()` returns an SSL context that trusts it.

    with IMAPServer() as srv:
        password = srv.add_user("bob@shop.test")             # "pw-bob@shop.test"
        uid = srv.deliver("bob@shop.test", raw_bytes)       # APPEND, unread
        srv.port, srv.tls_port                                # plain/STARTTLS, implicit TLS
"""

from __future__ import annotations

import datetime as dt
import imaplib
import ipaddress
import itertools
import os
import pwd
import re
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

DOVECOT = shutil.which("dovecot") or "/usr/sbin/dovecot"
INSTALL_HINT = "Dovecot is not installed: apt-get install -y dovecot-imapd"


def available() -> bool:
    """True when the Dovecot binary and its IMAP service are installed."""
    return Path(DOVECOT).exists() and Path("/usr/lib/dovecot/imap").exists()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _self_signed(cert: Path, key: Path) -> None:
    """Write a self-signed certificate for 127.0.0.1 and its key (PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(private.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ))


_SSL = """\
ssl = yes
ssl_cert = <{base}/cert.pem
ssl_key = <{base}/key.pem
{ssl_dh}"""
_IMAPS = """\
  inet_listener imaps {{
    address = 127.0.0.1
    port = {tls_port}
    ssl = yes
  }}"""

_CONFIG = """\
protocols = imap
listen = 127.0.0.1
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
info_log_path = {base}/dovecot.log
default_internal_user = {user}
default_internal_group = {group}
default_login_user = {user}
first_valid_uid = {uid}
first_valid_gid = {gid}
{ssl}
auth_mechanisms = plain login xoauth2
auth_failure_delay = 0
mail_location = maildir:~/Maildir
mailbox_list_index = no
# Every user exists; the password of user U is "pw-U" (see password_for).
passdb {{
  driver = static
  args = password=pw-%u
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/home/%u
}}
namespace inbox {{
  inbox = yes
  separator = /
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {port}
  }}
{imaps}
}}
service anvil {{
  chroot =
  # No growing delay for a client that failed to log in: tests refuse logins on purpose.
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service auth-worker {{
  user = {user}
}}
"""


class IMAPServer:
    """Dovecot on 127.0.0.1: `port` speaks plain IMAP and offers STARTTLS, `tls_port` TLS.

    Loopback connections count as secure for Dovecot, so a plain login works too (the
    client's own rule decides whether it sends one). `tls=False` makes a server with no TLS
    at all: no STARTTLS offered, no `tls_port` (0).
    """

    def __init__(self, *, tls: bool = True) -> None:
        self.tls = tls
        self.port = free_port()
        self.tls_port = free_port() if tls else 0
        self.base = Path(tempfile.mkdtemp(prefix="commplan-imap-"))
        self.passwords: dict[str, str] = {}
        self._proc: subprocess.Popen[bytes] | None = None
        # As root, run everything as Dovecot's own system user (it refuses mail as uid 0).
        self._as = pwd.getpwnam("dovecot") if os.geteuid() == 0 else pwd.getpwuid(os.getuid())

    # -- life cycle

    def start(self) -> IMAPServer:
        base = self.base
        for sub in ("run", "state", "home"):
            (base / sub).mkdir()
        _self_signed(base / "cert.pem", base / "key.pem")
        dh = Path("/usr/share/dovecot/dh.pem")
        ssl_dh = f"ssl_dh = <{dh}" if dh.exists() else ""
        conf = _CONFIG.format(
            base=base, user=self._as.pw_name, group=_group_name(self._as.pw_gid),
            uid=self._as.pw_uid, gid=self._as.pw_gid, port=self.port,
            ssl=_SSL.format(base=base, ssl_dh=ssl_dh) if self.tls else "ssl = no",
            imaps=_IMAPS.format(tls_port=self.tls_port) if self.tls else "",
        )
        (base / "dovecot.conf").write_text(conf)
        if os.geteuid() == 0:
            _chown_tree(base, self._as.pw_uid, self._as.pw_gid)
        run_as: dict = {}
        if os.geteuid() == 0:
            run_as = {"user": self._as.pw_uid, "group": self._as.pw_gid, "extra_groups": []}
        self._proc = subprocess.Popen(
            [DOVECOT, "-F", "-c", str(base / "dovecot.conf")],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, **run_as,
        )
        self._wait_ready()
        return self

    def _wait_ready(self, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self._proc is not None and self._proc.poll() is not None:
                err = self._proc.stderr.read().decode() if self._proc.stderr else ""
                raise RuntimeError(f"dovecot stopped at start: {err}{self.log()}")
            for port in (self.port, self.tls_port) if self.tls else (self.port,):
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                except OSError:
                    break
            else:
                return
            time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen within {timeout:g} s: {self.log()}")

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            if self._proc.stderr:
                self._proc.stderr.close()
            self._proc = None
        shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> IMAPServer:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log(self) -> str:
        path = self.base / "dovecot.log"
        return path.read_text(errors="replace") if path.exists() else ""

    # -- accounts and mail

    def add_user(self, user: str) -> str:
        """An account's name and password: every user exists, with the password "pw-<user>"."""
        self.passwords[user] = password_for(user)
        return self.passwords[user]

    def admin(self, user: str) -> imaplib.IMAP4:
        """A logged-in plain connection as `user`, for the test's own checks."""
        conn = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        conn.login(user, self.passwords[user])
        return conn

    def deliver(self, user: str, raw: bytes, folder: str = "INBOX", *,
                received: dt.datetime | None = None) -> int:
        """Put one message into `folder` (created if needed), unread; return its UID.

        `received` sets the date the server says it arrived (IMAP INTERNALDATE).
        """
        conn = self.admin(user)
        try:
            if folder.upper() != "INBOX":
                conn.create(_quote(folder))  # fails harmlessly when it exists
            when = imaplib.Time2Internaldate(received) if received else None
            typ, data = conn.append(_quote(folder), "", when, raw)
            assert typ == "OK", data
            found = re.search(rb"APPENDUID \d+ (\d+)", data[0] or b"")
            return int(found.group(1)) if found else 0
        finally:
            conn.logout()

    def create_folder(self, user: str, folder: str) -> None:
        conn = self.admin(user)
        try:
            conn.create(_quote(folder))
        finally:
            conn.logout()

    def recreate_folder(self, user: str, folder: str) -> None:
        """Delete and create `folder` again: Dovecot gives it a new UIDVALIDITY."""
        conn = self.admin(user)
        try:
            conn.delete(_quote(folder))
            typ, data = conn.create(_quote(folder))
            assert typ == "OK", data
        finally:
            conn.logout()

    def flags(self, user: str, folder: str = "INBOX") -> dict[int, str]:
        """UID -> the FLAGS string of every message in `folder`, read without changing it."""
        conn = self.admin(user)
        try:
            typ, _ = conn.select(_quote(folder), readonly=True)
            assert typ == "OK", folder
            typ, data = conn.uid("FETCH", "1:*", "(FLAGS)")
            result: dict[int, str] = {}
            for item in data:
                if not isinstance(item, bytes):
                    continue
                m = re.search(rb"UID (\d+) FLAGS \(([^)]*)\)", item) or re.search(
                    rb"FLAGS \(([^)]*)\) UID (\d+)", item)
                if m is None:
                    continue
                if m.re.pattern.startswith(rb"UID"):
                    result[int(m.group(1))] = m.group(2).decode()
                else:
                    result[int(m.group(2))] = m.group(1).decode()
            return result
        finally:
            conn.logout()

    def uidvalidity(self, user: str, folder: str = "INBOX") -> int:
        conn = self.admin(user)
        try:
            typ, data = conn.status(_quote(folder), "(UIDVALIDITY)")
            assert typ == "OK", data
            return int(re.search(rb"UIDVALIDITY (\d+)", data[0]).group(1))  # type: ignore[union-attr]
        finally:
            conn.logout()

    def client_context(self) -> ssl.SSLContext:
        """An SSL context that verifies the server against this server's own certificate."""
        ctx = ssl.create_default_context(cafile=str(self.base / "cert.pem"))
        return ctx


def password_for(user: str) -> str:
    """The password the server accepts for `user`."""
    return f"pw-{user}"


def _quote(folder: str) -> str:
    from commplan_xl.mail.imap import mutf7

    return '"' + mutf7(folder).replace("\\", "\\\\").replace('"', '\\"') + '"'


def _group_name(gid: int) -> str:
    import grp

    return grp.getgrgid(gid).gr_name


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid)


# The tests' mark and fixtures: a test module reading a mailbox says
# `pytestmark = imap_server.needs_dovecot` and asks for `server` and `account`
# (tests/conftest.py provides them).

# Skipped on a developer machine without Dovecot; in CI a missing Dovecot fails instead.
needs_dovecot = pytest.mark.skipif(not available() and not os.environ.get("CI"),
                                   reason=INSTALL_HINT)
_users = itertools.count(1)


@pytest.fixture(scope="module")
def server():
    """One Dovecot per test module; each test gets its own mailbox account."""
    with IMAPServer() as srv:
        yield srv


@pytest.fixture
def account(server):
    """A fresh mailbox account on the module's Dovecot."""
    user = f"commandes{next(_users)}@menuiserie-durand.test"
    server.add_user(user)
    return user
