"""The Settings keys table: the record, the parsing, the checks, the starter and the README."""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from pathlib import Path

import openpyxl
import pytest

from commplan_xl.excel.read import read_tables
from commplan_xl.excel.starter import create_workbook
from commplan_xl.excel.validate import validate
from commplan_xl.settings import KEYS, KNOWN_KEYS, Settings, parse_settings
from tests.builders import DEFAULT_SETTINGS, make_workbook

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_lists_every_key() -> None:
    """The README's "Settings keys" paragraph names every key of the table."""
    text = README.read_text(encoding="utf-8")
    paragraph = text[text.index("**Settings keys**"):]
    paragraph = paragraph[:paragraph.index("\n\n")]
    named = set(re.findall(r"`([a-z0-9_]+)`", paragraph))
    assert [key.name for key in KEYS if key.name not in named] == []


def test_record_has_a_field_per_key() -> None:
    """Settings has the home folder and one field per key, with the key's default."""
    fields = dataclasses.fields(Settings)
    assert [f.name for f in fields] == ["home", *KNOWN_KEYS]
    assert [f.default for f in fields[1:]] == [key.default for key in KEYS]


def test_every_key_has_a_description_and_a_unique_name() -> None:
    """Each key is in the table once and says what it is for."""
    assert len(set(KNOWN_KEYS)) == len(KEYS)
    assert all(key.description.endswith(".") for key in KEYS)


def test_empty_sheet_gives_the_defaults(tmp_path: Path) -> None:
    """With no Settings rows every value is its default; folders are under the home."""
    settings, problems = parse_settings({}, home=tmp_path, environ={})
    assert problems == []
    assert settings == Settings(home=tmp_path, attachments_dir=tmp_path / "attachments",
                                archive_dir=tmp_path / "archive")


ENV_SAMPLES = {
    "sender_email": ("Ops@Example.test", "ops@example.test"),
    "smtp_host": ("mail.example.com", "mail.example.com"),
    "smtp_port": ("465", 465),
    "smtp_security": ("SSL", "ssl"),
    "smtp_user": ("ops", "ops"),
    "imap_host": ("imap.example.com", "imap.example.com"),
    "imap_port": ("143", 143),
    "imap_security": ("STARTTLS", "starttls"),
    "imap_user": ("ops@example.com", "ops@example.com"),
}


@pytest.mark.parametrize("key", [key for key in KEYS if key.env], ids=lambda key: key.name)
def test_environment_overrides_the_sheet(tmp_path: Path, key) -> None:
    """A key's environment variable wins over the sheet, and a bad value there is reported
    without a sheet row."""
    text, value = ENV_SAMPLES[key.name]
    raw = {key.name: ("sheet-value", 4)}
    settings, problems = parse_settings(raw, home=tmp_path, environ={key.env: text})
    assert getattr(settings, key.name) == value
    assert problems == []


def test_bad_environment_value_has_no_row(tmp_path: Path) -> None:
    """A bad port from COMMPLAN_SMTP_PORT is reported without the sheet's row, and the
    default port is used."""
    settings, problems = parse_settings({"smtp_port": ("587", 4)}, home=tmp_path,
                                        environ={"COMMPLAN_SMTP_PORT": "vingt"})
    assert [str(p) for p in problems] == [
        'Settings (value): smtp_port: "vingt" is not a port number (e.g. 587)']
    assert settings.smtp_port == 25


@pytest.mark.parametrize(
    ("key", "text", "message"),
    [("smtp_port", "vingt", '"vingt" is not a port number (e.g. 587)'),
     ("smtp_security", "TLS", '"tls" is not one of starttls, ssl, none'),
     ("smtp_auth", "kerberos", '"kerberos" is not one of password, oauth2-google, '
      "oauth2-microsoft"),
     ("catch_up_days", "2,5", '"2,5" is not a whole number ≥ 0'),
     ("daily_limit", "-3", '"-3" is not a whole number ≥ 0'),
     ("smtp_timeout", "0", '"0" is not a number of seconds above 0'),
     ("sentlog_days", "0", '"0" is not a whole number of days ≥ 1'),
     ("sentlog_days", "30,5", '"30,5" is not a whole number of days ≥ 1'),
     ("sentlog_days", "un an", '"un an" is not a whole number of days ≥ 1'),
     ("timezone", "Europe/Lyon", '"Europe/Lyon" is not a time zone (e.g. Europe/Paris)'),
     ("locale", "zz_ZZ_ZZ", '"zz_ZZ_ZZ" is not a locale (e.g. fr_FR)')],
)
def test_bad_value_is_reported_and_the_default_kept(tmp_path: Path, key: str, text: str,
                                                     message: str) -> None:
    """A value its key cannot read is a problem at its row, and the default stays."""
    settings, problems = parse_settings({key: (text, 6)}, home=tmp_path, environ={})
    assert [str(p) for p in problems] == [f"Settings row 6 (value): {key}: {message}"]
    default = dataclasses.replace(settings, **{key: getattr(Settings(home=tmp_path), key)})
    assert settings == default


def test_unknown_key_names_every_known_key(tmp_path: Path) -> None:
    """`check` reports a key not in the table at its cell, as written, listing the table."""
    rows = [*DEFAULT_SETTINGS, {"key": "Sender Mail", "value": "x@y.fr"}]
    tables = read_tables(make_workbook(tmp_path, settings=rows))
    _model, _settings, problems = validate(tables, home=tmp_path, environ={})
    (problem,) = problems
    assert (problem.row, problem.column, problem.cell) == (len(rows) + 1, "key",
                                                          f"A{len(rows) + 1}")
    assert problem.message == ('"Sender Mail" is not a known setting; known settings are '
                               + ", ".join(KNOWN_KEYS) + ".")


def test_every_known_key_is_accepted(tmp_path: Path) -> None:
    """No key of the table is refused as unknown by `check`."""
    rows = [{"key": key.name, "value": ""} for key in KEYS]
    rows[0]["value"] = "service@example.test"
    tables = read_tables(make_workbook(tmp_path, settings=rows))
    _model, _settings, problems = validate(tables, home=tmp_path, environ={})
    assert [p for p in problems if p.sheet == "Settings"] == []


def test_starter_has_a_row_per_key_with_its_description(tmp_path: Path) -> None:
    """The starter workbook's Settings sheet lists every key, in the table's order, with
    the key's description beside it."""
    create_workbook(tmp_path / "w.xlsx", today=dt.date(2026, 11, 27))
    ws = openpyxl.load_workbook(tmp_path / "w.xlsx")["Paramètres"]
    rows = [(r[0], r[2]) for r in ws.iter_rows(min_row=2, values_only=True) if r[0]]
    assert rows == [(key.name, key.description) for key in KEYS]
