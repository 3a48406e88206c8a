"""Frozen Settings from the Settings sheet and the environment; never prompts."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from commplan_xl.problems import WorkbookProblem

KNOWN_KEYS = (
    "sender_email", "sender_name", "reply_to", "smtp_host", "smtp_port", "smtp_security",
    "smtp_user", "smtp_auth", "locale", "timezone", "holidays", "catch_up_days", "daily_limit",
    "attachments_dir", "archive_dir", "report_to", "oauth_tenant_id", "oauth_client_id",
    "oauth2_file", "smtp_timeout", "logo", "signature",
)
ENV_OVERRIDES = {
    "smtp_host": "COMMPLAN_SMTP_HOST",
    "smtp_port": "COMMPLAN_SMTP_PORT",
    "smtp_security": "COMMPLAN_SMTP_SECURITY",
    "smtp_user": "COMMPLAN_SMTP_USER",
    "sender_email": "COMMPLAN_SENDER_EMAIL",
}
SECURITIES = ("starttls", "ssl", "none")
# smtp_auth -> (host, port, security) used when the sheet and environment leave smtp_host empty.
PROVIDER_PRESETS = {
    "oauth2-microsoft": ("smtp.office365.com", 587, "starttls"),
    "oauth2-google": ("smtp.gmail.com", 587, "starttls"),
}


@dataclass(frozen=True)
class Settings:
    home: Path
    sender_email: str = ""
    sender_name: str = ""
    reply_to: str = ""
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_security: str = "none"
    smtp_user: str = ""
    smtp_auth: str = "password"
    smtp_timeout: float = 30.0
    locale: str = "fr_FR"
    timezone: str = "Europe/Paris"
    holidays: str = ""  # "FR", or "FR-57"/"FR:57" for a subdivision; empty = weekends only
    catch_up_days: int = 7
    daily_limit: int | None = None
    attachments_dir: Path = field(default=Path("attachments"))
    archive_dir: Path = field(default=Path("archive"))
    report_to: tuple[str, ...] = ()
    oauth_tenant_id: str = ""
    oauth_client_id: str = ""
    oauth2_file: str = ""
    logo: str = ""  # an image file in attachments/, shown at the top of every mail
    signature: str = ""  # Markdown (variables allowed), shown under every mail's body

    @property
    def holiday_country(self) -> str:
        """The country part of `holidays` ("FR" of "FR-57")."""
        return _split_holidays(self.holidays)[0]

    @property
    def holiday_subdiv(self) -> str | None:
        return _split_holidays(self.holidays)[1]


def _split_holidays(value: str) -> tuple[str, str | None]:
    value = value.strip()
    for sep in (":", "-", "/", " "):
        if sep in value:
            country, sub = value.split(sep, 1)
            return country.strip().upper(), sub.strip() or None
    return value.upper(), None


def parse_settings(
    raw: Mapping[str, tuple[str, int]],
    *,
    home: Path,
    environ: Mapping[str, str] | None = None,
) -> tuple[Settings, list[WorkbookProblem]]:
    """Settings from the sheet's key -> (value, excel_row), with environment overrides.

    Returns the settings (bad values replaced by defaults) and the problems found.
    """
    env = os.environ if environ is None else environ
    problems: list[WorkbookProblem] = []
    values: dict[str, str] = {k: v for k, (v, _row) in raw.items()}
    rows = {k: row for k, (_v, row) in raw.items()}
    for key, var in ENV_OVERRIDES.items():
        if env.get(var, "").strip():
            values[key] = env[var].strip()
            rows.pop(key, None)

    def bad(key: str, message: str) -> None:
        problems.append(WorkbookProblem("Settings", rows.get(key), "value", f"{key}: {message}"))

    kw: dict[str, object] = {}
    for key in ("sender_email", "sender_name", "reply_to", "smtp_user", "locale", "timezone",
                "holidays", "oauth_tenant_id", "oauth_client_id", "oauth2_file", "logo",
                "signature"):
        if values.get(key, "").strip():
            kw[key] = values[key].strip()
    if values.get("sender_email"):
        kw["sender_email"] = values["sender_email"].strip().lower()
    if values.get("smtp_host", "").strip():
        kw["smtp_host"] = values["smtp_host"].strip()

    port_text = values.get("smtp_port", "").strip()
    port = 25
    if port_text:
        try:
            port = int(float(port_text))
            if not 0 < port < 65536:
                raise ValueError
        except ValueError:
            bad("smtp_port", f'"{port_text}" is not a port number (e.g. 587)')
            port = 25
    kw["smtp_port"] = port

    security = values.get("smtp_security", "").strip().lower()
    if security and security not in SECURITIES:
        bad("smtp_security", f'"{security}" is not one of starttls, ssl, none')
        security = ""
    if not security:
        security = {465: "ssl", 587: "starttls"}.get(port, "none")
    kw["smtp_security"] = security

    auth = values.get("smtp_auth", "").strip().lower() or "password"
    if auth not in ("password", "oauth2-google", "oauth2-microsoft"):
        bad("smtp_auth", f'"{auth}" is not one of password, oauth2-google, oauth2-microsoft')
        auth = "password"
    kw["smtp_auth"] = auth
    if auth == "oauth2-microsoft":
        for key in ("oauth_tenant_id", "oauth_client_id"):
            if not values.get(key, "").strip():
                bad("smtp_auth", f"oauth2-microsoft needs {key} (from the app registration)")
    preset = PROVIDER_PRESETS.get(auth)
    if preset and not values.get("smtp_host", "").strip():
        kw["smtp_host"] = preset[0]
        if not port_text:  # a port given alone keeps the security it implies (465: ssl)
            kw["smtp_port"] = preset[1]
            if not values.get("smtp_security", "").strip():
                kw["smtp_security"] = preset[2]

    for key, default in (("catch_up_days", 7), ("daily_limit", None)):
        text = values.get(key, "").strip()
        if not text:
            continue
        try:
            number = float(text.replace(",", "."))
            if number < 0 or number != int(number):
                raise ValueError
            kw[key] = int(number)
        except ValueError:
            bad(key, f'"{text}" is not a whole number ≥ 0')
            if default is not None:
                kw[key] = default

    timeout = values.get("smtp_timeout", "").strip()
    if timeout:
        try:
            seconds = float(timeout.replace(",", "."))
            if not seconds > 0:
                raise ValueError
            kw["smtp_timeout"] = seconds
        except ValueError:
            bad("smtp_timeout", f'"{timeout}" is not a number of seconds above 0')

    for key in ("attachments_dir", "archive_dir"):
        text = values.get(key, "").strip()
        path = Path(text) if text else Path(key.removesuffix("_dir"))
        kw[key] = path if path.is_absolute() else home / path

    report = values.get("report_to", "")
    if report.strip():
        kw["report_to"] = tuple(
            a.strip().lower() for a in report.replace(",", ";").split(";") if a.strip()
        )

    if "timezone" in kw:
        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(str(kw["timezone"]))
        except Exception:
            bad("timezone", f'"{kw["timezone"]}" is not a time zone (e.g. Europe/Paris)')
            del kw["timezone"]
    if "locale" in kw:
        try:
            from babel import Locale

            Locale.parse(str(kw["locale"]))
        except Exception:
            bad("locale", f'"{kw["locale"]}" is not a locale (e.g. fr_FR)')
            del kw["locale"]

    return Settings(home=home, **kw), problems  # type: ignore[arg-type]
