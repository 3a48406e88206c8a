"""Frozen Settings from the Settings sheet and the environment; never prompts.

Adding a key is one row of KEYS: the Settings record, the sheet's parsing, the unknown-key
check, the starter workbook's Settings rows and the README test all read the table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, make_dataclass
from pathlib import Path
from typing import Any

from commplan_xl.i18n import _
from commplan_xl.problems import WorkbookProblem

SECURITIES = ("starttls", "ssl", "none")
IMAP_SECURITIES = ("ssl", "starttls", "none")
AUTHS = ("password", "oauth2-google", "oauth2-microsoft")
# smtp_auth -> (host, port, security) used when the sheet and environment leave smtp_host empty.
PROVIDER_PRESETS = {
    "oauth2-microsoft": ("smtp.office365.com", 587, "starttls"),
    "oauth2-google": ("smtp.gmail.com", 587, "starttls"),
}
# smtp_auth -> the mailbox server read for returned mails when imap_host is empty.
IMAP_PRESETS = {
    "oauth2-microsoft": "outlook.office365.com",
    "oauth2-google": "imap.gmail.com",
}


# Parsers: the trimmed, non-empty text of a value → the value, or a ValueError whose
# message follows "key: " in the problem.


def _text(text: str) -> str:
    return text


def _address(text: str) -> str:
    return text.lower()


def _one_address(text: str) -> str:
    """One email address, as Reply-To carries it; a typo here would fail every mail."""
    from email.headerregistry import Address

    try:
        if any(ch.isspace() or ord(ch) < 32 for ch in text) or "," in text or ";" in text:
            raise ValueError
        parsed = Address(addr_spec=text)
        if not parsed.username or "." not in parsed.domain.strip("."):
            raise ValueError
    except Exception:  # the email package raises several kinds for a malformed address
        raise ValueError(_('"{text}" is not an email address (e.g. contact@votre-societe.fr)')
                         .format(text=text)) from None
    return text


def _port(text: str) -> int:
    try:
        port = int(float(text))
    except (ValueError, OverflowError):
        port = 0
    if not 0 < port < 65536:
        raise ValueError(_('"{text}" is not a port number (e.g. 587)').format(text=text))
    return port


def _one_of(choices: tuple[str, ...]) -> Callable[[str], str]:
    def parse(text: str) -> str:
        word = text.lower()
        if word not in choices:
            raise ValueError(_('"{word}" is not one of {choices}').format(
                word=word, choices=", ".join(choices)))
        return word

    return parse


def _count(text: str) -> int:
    try:
        number = float(text.replace(",", "."))
        whole = number >= 0 and number == int(number)
    except (ValueError, OverflowError):
        whole = False
    if not whole:
        raise ValueError(_('"{text}" is not a whole number ≥ 0').format(text=text))
    return int(number)


def _days(text: str) -> int:
    try:
        days = _count(text)
    except ValueError:
        days = 0
    if days < 1:
        raise ValueError(f'"{text}" is not a whole number of days ≥ 1')
    return days


def _yes_no(text: str) -> bool:
    word = text.lower()
    if word in ("yes", "oui", "true", "vrai", "1", "y", "o"):
        return True
    if word in ("no", "non", "false", "faux", "0", "n"):
        return False
    raise ValueError(f'"{text}" is not yes or no')


def _seconds(text: str) -> float:
    try:
        seconds = float(text.replace(",", "."))
    except ValueError:
        seconds = 0.0
    if not seconds > 0:
        raise ValueError(_('"{text}" is not a number of seconds above 0').format(text=text))
    return seconds


def _addresses(text: str) -> tuple[str, ...]:
    return tuple(a.strip().lower() for a in text.replace(",", ";").split(";") if a.strip())


def _time_zone(text: str) -> str:
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(text)
    except Exception:
        raise ValueError(_('"{text}" is not a time zone (e.g. Europe/Paris)').format(
            text=text)) from None
    return text


def _locale(text: str) -> str:
    try:
        from babel import Locale

        Locale.parse(text)
    except Exception:
        raise ValueError(_('"{text}" is not a locale (e.g. fr_FR)').format(text=text)) from None
    return text


@dataclass(frozen=True)
class Key:
    """One Settings key: how its text is read, its default, and who may override it."""

    name: str
    kind: Any  # the Settings field's type
    parse: Callable[[str], Any]
    default: Any
    env: str = ""  # an environment variable that overrides the sheet
    description: str = ""  # for staff, in the starter workbook (French)


KEYS: tuple[Key, ...] = (
    Key("sender_email", str, _address, "", "COMMPLAN_SENDER_EMAIL",
        "Adresse d'expédition des mails (obligatoire)."),
    Key("sender_name", str, _text, "",
        description="Nom affiché comme expéditeur : {{ sender.name }}."),
    Key("reply_to", str, _one_address, "",
        description="Adresse de réponse, si différente de l'expéditeur."),
    Key("smtp_host", str, _text, "localhost", "COMMPLAN_SMTP_HOST",
        "Serveur d'envoi (SMTP) de votre messagerie, ex. smtp.office365.com ou smtp.gmail.com."),
    Key("smtp_port", int, _port, 25, "COMMPLAN_SMTP_PORT",
        "Port du serveur : 587 (STARTTLS) ou 465 (SSL) en général."),
    Key("smtp_security", str, _one_of(SECURITIES), "none", "COMMPLAN_SMTP_SECURITY",
        "starttls, ssl ou none. Vide = déduit du port (465 ssl, 587 starttls)."),
    Key("smtp_user", str, _text, "", "COMMPLAN_SMTP_USER",
        "Identifiant de connexion au serveur. Vide = pas de connexion. Le mot de passe n'est "
        "jamais ici : variable COMMPLAN_SMTP_PASSWORD ou trousseau du système."),
    Key("smtp_auth", str, _one_of(AUTHS), "password",
        description="Mode de connexion : password (mot de passe), oauth2-microsoft "
        "(Microsoft 365) ou oauth2-google (Gmail). Vide = password."),
    Key("locale", str, _locale, "fr_FR",
        description="Langue du classeur : fr_FR (français, 27 novembre 2026 dans les mails) "
        "ou en_GB (anglais). Elle nomme les feuilles que commplan écrit (Journal ou "
        "SentLog…)."),
    Key("timezone", str, _time_zone, "Europe/Paris",
        description="Fuseau horaire qui fixe « aujourd'hui »."),
    # "FR", or "FR-57"/"FR:57" for a subdivision; empty = weekends only
    Key("holidays", str, _text, "",
        description="Pays des jours fériés pour les jours ouvrés (FR). Vide = seuls les "
        "week-ends sont exclus."),
    Key("catch_up_days", int, _count, 7,
        description="Un message en retard de plus de ce nombre de jours n'est plus envoyé "
        "(noté « missed »)."),
    Key("daily_limit", int | None, _count, None,
        description="Nombre maximum de mails par jour. Vide = pas de limite."),
    Key("attachments_dir", Path, Path, Path("attachments"),
        description="Dossier des pièces jointes. Vide = le dossier attachments à côté du "
        "dossier workbooks."),
    Key("archive_dir", Path, Path, Path("archive"),
        description="Dossier où une copie de chaque mail envoyé est gardée. Vide = le dossier "
        "archive à côté du dossier workbooks."),
    Key("report_to", tuple[str, ...], _addresses, (),
        description="Adresse(s) qui reçoivent le compte rendu de chaque envoi, séparées "
        "par ;. Vide = pas de compte rendu."),
    Key("oauth_tenant_id", str, _text, "",
        description="Avec oauth2-microsoft : l'ID de l'annuaire (tenant) de l'application "
        "enregistrée."),
    Key("oauth_client_id", str, _text, "",
        description="Avec oauth2-microsoft : l'ID de l'application (client) enregistrée."),
    Key("oauth2_file", str, _text, "",
        description="Avec oauth2-google : où garder le jeton. Vide = google-oauth2.json dans "
        "le dossier de commplan."),
    Key("smtp_timeout", float, _seconds, 30.0,
        description="Secondes d'attente d'une réponse du serveur d'envoi avant d'abandonner. "
        "Vide = 30."),
    Key("logo", str, _text, "",
        description="Logo en haut de chaque mail : le nom d'un fichier image (PNG, JPEG) du "
        "dossier attachments. Vide = pas de logo."),
    Key("send_days", str, _one_of(("all", "business")), "all",
        description="Jours d'envoi : all (tous les jours) ou business (un message dû un "
        "week-end ou un jour férié de holidays part le jour ouvré suivant). Vide = all."),
    Key("signature", str, _text, "",
        description="Signature sous chaque mail (Markdown, variables permises, ex. "
        "{{ sender.name }}). Vide = pas de signature."),
    Key("bounces", bool, _yes_no, False,
        description="yes : chaque envoi lit d'abord les mails revenus (adresse inexistante, "
        "boîte pleine) dans la boîte d'expédition. Vide = no."),
    Key("imap_host", str, _text, "", "COMMPLAN_IMAP_HOST",
        "Serveur de lecture (IMAP) de la boîte d'expédition. Vide = outlook.office365.com "
        "ou imap.gmail.com selon smtp_auth."),
    Key("imap_port", int, _port, 993, "COMMPLAN_IMAP_PORT",
        "Port du serveur IMAP : 993 (SSL) en général."),
    Key("imap_security", str, _one_of(IMAP_SECURITIES), "", "COMMPLAN_IMAP_SECURITY",
        "ssl, starttls ou none. Vide = déduit du port (993 ssl, 143 starttls)."),
    Key("imap_user", str, _text, "", "COMMPLAN_IMAP_USER",
        "Identifiant de la boîte à lire. Vide = celui de l'envoi (smtp_user). Le mot de "
        "passe : variable COMMPLAN_IMAP_PASSWORD, sinon celui de l'envoi."),
    Key("imap_folder", str, _text, "INBOX",
        description="Dossier où arrivent les mails revenus. Vide = INBOX (boîte de "
        "réception)."),
    Key("bounce_folder_done", str, _text, "",
        description="Dossier (existant) où ranger les mails revenus une fois traités. Vide = "
        "ils restent où ils sont."),
    Key("sentlog_days", int, _days, 365,
        description="Nombre de jours que la feuille Journal (SentLog) montre. Vide = 365. "
        "Tout reste dans l'historique : « commplan log » en sort n'importe quelle période."),
)
KEY_OF: dict[str, Key] = {key.name: key for key in KEYS}
KNOWN_KEYS: tuple[str, ...] = tuple(KEY_OF)
ENV_OVERRIDES: dict[str, str] = {key.name: key.env for key in KEYS if key.env}


def _split_holidays(value: str) -> tuple[str, str | None]:
    value = value.strip()
    for sep in (":", "-", "/", " "):
        if sep in value:
            country, sub = value.split(sep, 1)
            return country.strip().upper(), sub.strip() or None
    return value.upper(), None


class Settings(make_dataclass(  # type: ignore[misc]
    "SettingsFields",
    [("home", Path), *((key.name, key.kind, field(default=key.default)) for key in KEYS)],
    frozen=True,
    namespace={"__module__": __name__},
)):
    """The settings of one home: a field per row of KEYS, plus the home folder."""

    __slots__ = ()

    @property
    def holiday_country(self) -> str:
        """The country part of `holidays` ("FR" of "FR-57")."""
        return _split_holidays(self.holidays)[0]

    @property
    def holiday_subdiv(self) -> str | None:
        return _split_holidays(self.holidays)[1]


def unknown_key(key: str, written: object) -> str | None:
    """The problem with a key cell (`key` as normalised, `written` as in the cell) that
    names no setting; None for a known key."""
    if key in KEY_OF:
        return None
    return _('"{written}" is not a known setting; known settings are {known}.').format(
        written=written, known=", ".join(KNOWN_KEYS))


def sheet_rows(
    raw: Mapping[str, tuple[str, int]], environ: Mapping[str, str]
) -> dict[str, int]:
    """The Settings row of each key the environment leaves to the sheet."""
    return {
        key: row for key, (_value, row) in raw.items()
        if not (key in ENV_OVERRIDES and environ.get(ENV_OVERRIDES[key], "").strip())
    }


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
    texts = {key: value.strip() for key, (value, _row) in raw.items()}
    for key, var in ENV_OVERRIDES.items():
        if env.get(var, "").strip():
            texts[key] = env[var].strip()
    rows = sheet_rows(raw, env)

    def bad(key: str, message: str) -> None:
        problems.append(WorkbookProblem("Settings", rows.get(key), "value", f"{key}: {message}"))

    values: dict[str, Any] = {}
    for key in KEYS:
        text = texts.get(key.name, "")
        if text:
            try:
                values[key.name] = key.parse(text)
            except ValueError as exc:
                bad(key.name, str(exc))
    _connection(values, texts, bad)
    for name in ("attachments_dir", "archive_dir"):
        path = values.get(name, KEY_OF[name].default)
        values[name] = path if path.is_absolute() else home / path
    return Settings(home=home, **values), problems


def _connection(values: dict[str, Any], texts: Mapping[str, str],
                bad: Callable[[str, str], None]) -> None:
    """The SMTP values one key implies for another: security from the port, the
    provider presets of smtp_auth, and the ids oauth2-microsoft needs."""
    port = values.setdefault("smtp_port", KEY_OF["smtp_port"].default)
    if "smtp_security" not in values:
        values["smtp_security"] = {465: "ssl", 587: "starttls"}.get(port, "none")
    auth = values.get("smtp_auth", KEY_OF["smtp_auth"].default)
    if auth == "oauth2-microsoft":
        for key in ("oauth_tenant_id", "oauth_client_id"):
            if not texts.get(key):
                bad("smtp_auth", f"oauth2-microsoft needs {key} (from the app registration)")
    preset = PROVIDER_PRESETS.get(auth)
    if preset and not texts.get("smtp_host"):
        values["smtp_host"] = preset[0]
        if not texts.get("smtp_port"):  # a port given alone keeps the security it implies
            values["smtp_port"] = preset[1]
            if not texts.get("smtp_security"):
                values["smtp_security"] = preset[2]
