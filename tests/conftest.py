"""Shared fixtures: a real local SMTP server, an in-memory keyring, and (for the tests
that read a mailbox) a Dovecot per module with an account per test."""

from __future__ import annotations

import keyring
import keyring.backend
import pytest

from tests.imap_server import account, server  # noqa: F401 - fixtures, see imap_server
from tests.smtp_server import SMTPServer

# Variables a developer's machine may set that would point a test at its own server,
# account or home folder.
SITE_ENV = ("COMMPLAN_SMTP_HOST", "COMMPLAN_SMTP_PORT", "COMMPLAN_SMTP_USER",
            "COMMPLAN_SMTP_SECURITY", "COMMPLAN_SMTP_PASSWORD", "COMMPLAN_SENDER_EMAIL",
            "COMMPLAN_HOME", "COMMPLAN_IMAP_HOST", "COMMPLAN_IMAP_PORT",
            "COMMPLAN_IMAP_SECURITY", "COMMPLAN_IMAP_USER", "COMMPLAN_OAUTH_CLIENT_SECRET")


@pytest.fixture
def clean_env(monkeypatch):
    """None of the machine's SITE_ENV variables leaks into the test; gives `monkeypatch`."""
    for var in SITE_ENV:
        monkeypatch.delenv(var, raising=False)
    return monkeypatch


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server on 127.0.0.1 at a free port, collecting what it receives."""
    with SMTPServer() as srv:
        yield srv


class MemoryKeyring(keyring.backend.KeyringBackend):
    """A real keyring backend kept in memory, so tests never touch the machine's keyring."""

    priority = 1  # type: ignore[assignment]

    def __init__(self, passwords: dict[tuple[str, str], str] | None = None) -> None:
        super().__init__()
        self.passwords = passwords or {}

    def get_password(self, service: str, username: str) -> str | None:
        return self.passwords.get((service, username))

    def set_password(self, service: str, username: str, password: str) -> None:
        self.passwords[(service, username)] = password

    def delete_password(self, service: str, username: str) -> None:
        self.passwords.pop((service, username), None)


@pytest.fixture
def memory_keyring():
    """Install an empty in-memory keyring for one test, then restore the previous backend."""
    previous = keyring.get_keyring()
    backend = MemoryKeyring()
    keyring.set_keyring(backend)
    yield backend
    keyring.set_keyring(previous)


@pytest.fixture(autouse=True)
def english_by_default():
    """Library calls in tests speak English unless a test chooses (the command line speaks
    the workbook's language); no test leaves its language to the next."""
    from commplan_xl import i18n

    i18n.set_language("en")
    yield
    i18n.set_language("en")
