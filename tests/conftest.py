"""Shared fixtures: a real local SMTP server."""

from __future__ import annotations

import pytest

from tests.smtp_server import SMTPServer


@pytest.fixture
def smtp_server():
    """A real aiosmtpd server on 127.0.0.1 at a free port, collecting what it receives."""
    with SMTPServer() as server:
        yield server
