"""The names staff see in the workbook, in French and English: the input sheets and their
columns, the order statuses and yes/no words, and the tool's own sheets, their headers and
the SentLog statuses.

Every name the workbook uses in either language is here, once: reading accepts all of
them, `init` writes one language's, and the tool writes its sheets in the workbook's
language (its `locale`). Header names compare as `read.normalise_header` makes them (case,
accents, spaces, `-` and `_` ignored).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from commplan_xl.excel.sheet_xml import ToolSheet

LANGUAGES = ("fr", "en")
DEFAULT_LANGUAGE = "fr"

_SEPARATORS = re.compile(r"[\W_]+")


def fold(name: str) -> str:
    """A name as headers compare: no accents, lower case, spaces/-/_ alike → "_"."""
    text = unicodedata.normalize("NFKD", str(name))
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    return _SEPARATORS.sub("_", text.casefold()).strip("_")


def language_of(locale: str) -> str | None:
    """The language of a locale ("fr_FR" → "fr", "en-GB" → "en"), None when the tool does
    not speak it."""
    code = str(locale).replace("-", "_").split("_")[0].strip().casefold()
    return code if code in LANGUAGES else None


def workbook_language(locale: str) -> str:
    """The language the tool writes a workbook in: its locale's, else French."""
    return language_of(locale) or DEFAULT_LANGUAGE


@dataclass(frozen=True)
class Name:
    """One thing's name in each language, and other spellings accepted when reading."""

    en: str
    fr: str
    also: tuple[str, ...] = ()

    def __call__(self, lang: str) -> str:
        """The name in `lang` ("fr" or "en")."""
        return self.fr if lang == "fr" else self.en

    def spellings(self) -> tuple[str, ...]:
        return (self.en, self.fr, *self.also)


# ---------------------------------------------------------------- input sheets

# Sheet key (the English name folded) → its names.
SHEETS: dict[str, Name] = {
    "settings": Name("Settings", "Paramètres", ("Réglages",)),
    "plans": Name("Plans", "Plans"),
    "customers": Name("Customers", "Clients"),
    "orders": Name("Orders", "Commandes"),
    "variables": Name("Variables", "Variables"),
}

# Sheet key → column key (the English name, folded, as validation and templates know it)
# → its names. `fr` is the header `init` writes in a French workbook.
COLUMNS: dict[str, dict[str, Name]] = {
    "settings": {
        "key": Name("key", "clé", ("paramètre", "réglage")),
        "value": Name("value", "valeur"),
        "description": Name("description", "description"),
    },
    "plans": {
        "plan": Name("plan", "plan"),
        "step": Name("step", "étape"),
        "delay": Name("delay", "délai"),
        "unit": Name("unit", "unité"),
        "subject": Name("subject", "objet"),
        "body": Name("body", "message"),
        "from": Name("from", "depuis", ("à partir de",)),
        "attachments": Name("attachments", "pièces jointes", ("pièce jointe",)),
        "active": Name("active", "actif"),
        "required": Name("required", "obligatoire"),
    },
    "customers": {
        "customer_id": Name("customer_id", "code client", ("n° client", "numéro client",
                                                            "no client")),
        "name": Name("name", "nom"),
        "email": Name("email", "email", ("e-mail", "courriel", "mail")),
        "opt_out": Name("opt_out", "désabonné", ("désabonnée",)),
    },
    "orders": {
        "order_id": Name("order_id", "n° commande", ("code commande", "numéro commande",
                                                     "numéro de commande", "no commande",
                                                     "n° de commande")),
        "customer_id": Name("customer_id", "code client", ("n° client", "numéro client",
                                                            "no client")),
        "plan": Name("plan", "plan"),
        "start_date": Name("start_date", "date de début", ("date commande",
                                                           "date de commande", "date début")),
        "status": Name("status", "statut"),
        "hold_steps": Name("hold_steps", "étapes suspendues"),
    },
    "variables": {
        "variable": Name("variable", "variable"),
        "value": Name("value", "valeur"),
        "description": Name("description", "description"),
    },
}

_SHEET_KEYS: dict[str, str] = {
    fold(spelling): key for key, name in SHEETS.items() for spelling in name.spellings()
}
_COLUMN_KEYS: dict[str, dict[str, str]] = {
    sheet: {fold(s): key for key, name in columns.items() for s in name.spellings()}
    for sheet, columns in COLUMNS.items()
}


def sheet_key(name: str) -> str:
    """The key of an input sheet named `name` in either language ("Clients" → "customers");
    any other sheet's name folded."""
    folded = fold(name)
    return _SHEET_KEYS.get(folded, folded)


def column_key(sheet: str, header: str) -> str:
    """The key of a column of sheet `sheet` (a key) headed `header` in either language
    ("Date de début" → "start_date"); any other column's header folded."""
    folded = fold(header)
    return _COLUMN_KEYS.get(sheet, {}).get(folded, folded)


def sheet_title(key: str, lang: str) -> str:
    """An input sheet's name in `lang` ("customers", "fr" → "Clients")."""
    return SHEETS[key](lang) if key in SHEETS else key


def column_title(sheet: str, key: str, lang: str) -> str:
    """A column's header in `lang` ("orders", "start_date", "fr" → "date de début")."""
    name = COLUMNS.get(sheet, {}).get(key)
    return name(lang) if name is not None else key


def column_titles(sheet: str, keys: Iterable[str], lang: str) -> list[str]:
    return [column_title(sheet, key, lang) for key in keys]


# ---------------------------------------------------------------- cell words

# Order status (its value in model.Status) → its names; reading accepts each spelling.
STATUSES: dict[str, Name] = {
    "active": Name("active", "actif", ("active", "en cours")),
    "paused": Name("paused", "en pause", ("pause", "suspendu", "suspendue")),
    "cancelled": Name("cancelled", "annulé", ("canceled", "annulée")),
    "done": Name("done", "terminé", ("terminée", "fini", "finie")),
}
YES = Name("yes", "oui")
NO = Name("no", "non")


# ---------------------------------------------------------------- the tool's own sheets

# Tool sheet key → its names. A sheet of the tool keeps its key whatever the language.
TOOL_SHEETS: dict[str, Name] = {
    "sentlog": Name("SentLog", "Journal"),
    "dashboard": Name("Dashboard", "Tableau de bord"),
    "forecast": Name("Forecast", "Prévisions"),
    "variablelist": Name("VariableList", "Liste des variables"),
}


def tool_sheet(key: str, lang: str) -> str:
    """A tool sheet's name in `lang` ("sentlog", "fr" → "Journal")."""
    return TOOL_SHEETS[key](lang)


def other_names(key: str, lang: str) -> tuple[str, ...]:
    """A tool sheet's names in the other languages (the names a locale change replaces)."""
    name = TOOL_SHEETS[key]
    return tuple(n for n in (name.en, name.fr) if n != name(lang))


# English header word of a tool sheet → French. Words not here read alike in both.
_TOOL_WORDS_FR: dict[str, str] = {
    # SentLog
    "order_id": "commande",
    "customer_id": "client",
    "step": "étape",
    "due_date": "échéance",
    "status": "statut",
    "subject": "objet",
    "detail": "détail",
    "archive_file": "fichier archivé",
    # Forecast, VariableList
    "customer": "nom du client",
    "note": "remarque",
    "example": "exemple",
    "reason": "raison",
    "attempts": "essais",
    "problem": "problème",
    "sent": "envoyés",
    "skipped": "ignorés",
    "failed": "échecs",
    "uncertain": "incertains",
}

# A SentLog status → its word in each language.
OUTCOMES: dict[str, Name] = {
    "sent": Name("sent", "envoyé"),
    "failed": Name("failed", "échec"),
    "skipped": Name("skipped", "ignoré"),
    "uncertain": Name("uncertain", "incertain"),
}


def tool_label(word: str, lang: str) -> str:
    """A tool sheet's header word in `lang` (English words are the keys)."""
    return _TOOL_WORDS_FR.get(word, word) if lang == "fr" else word


def tool_header(words: Iterable[str], lang: str) -> tuple[str, ...]:
    return tuple(tool_label(word, lang) for word in words)


def outcome_word(status: str, lang: str) -> str:
    """A SentLog status in `lang` ("sent", "fr" → "envoyé"); other text as it is."""
    name = OUTCOMES.get(status)
    return name(lang) if name is not None else status


def outcome_words(lang: str) -> Mapping[str, str]:
    return {status: name(lang) for status, name in OUTCOMES.items()}


def localise(sheet: ToolSheet, key: str, lang: str) -> ToolSheet:
    """A tool sheet built with English names (`key` says which: "forecast"), named and
    headed in `lang`; it knows its name and header in the other language, so a locale
    change renames the old sheet instead of leaving it beside."""
    header = tool_header(sheet.header, lang)
    widths = {tool_label(k, lang) if isinstance(k, str) and k in sheet.header else k: width
              for k, width in sheet.widths.items()}
    former = tuple((tool_sheet(key, other), tool_header(sheet.header, other))
                   for other in LANGUAGES
                   if tool_sheet(key, other).casefold() != tool_sheet(key, lang).casefold())
    return replace(sheet, name=tool_sheet(key, lang), header=header, widths=widths,
                   former=former)
