"""What the tool says to people, in French or English (gettext catalogs made with Babel).

Adding a sentence: write it in English inside ``_()`` where it is said, with named
``{fields}`` filled by ``.format()`` after the call (never an f-string: the catalog would
not find it)::

    from commplan_xl.i18n import _, ngettext
    say(_("Sent order {order} step {step} again.").format(order=o, step=n))
    say(ngettext("{n} problem to fix.", "{n} problems to fix.", n).format(n=n))

A sentence kept in a table and said later is marked ``N_("...")`` where it is written and
passed through ``_()`` where it is said. Then ``python -m commplan_xl.i18n.update``
extracts ``messages.pot``, merges it into ``fr/`` and ``en/``, and compiles the ``.mo``
files; write the French of each new entry (``msgstr``) in ``fr/LC_MESSAGES/messages.po``
and run it again. ``tests/test_i18n.py`` fails while a sentence of the code has no French.

The language is the workbook's ``locale`` once it is read (``fr_*`` French, ``en_*``
English, anything else French); before that ``COMMPLAN_LANG``, else the system's language,
else French.
"""

from __future__ import annotations

import contextlib
import gettext as _gettext
import locale as _locale
import os
import sys
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

LANGUAGES = ("fr", "en")
DEFAULT = "fr"
LOCALE_DIR = Path(__file__).resolve().parent

_catalogs: dict[str, _gettext.NullTranslations] = {}
_current = DEFAULT


def _catalog(lang: str) -> _gettext.NullTranslations:
    cat = _catalogs.get(lang)
    if cat is None:
        cat = _catalogs[lang] = _gettext.translation(
            "messages", LOCALE_DIR, languages=[lang], fallback=True)
    return cat


def language_of(locale: str | None) -> str:
    """"fr" or "en" for a locale name ("fr_FR", "en-GB", "English_United Kingdom"…);
    French for anything else."""
    text = (locale or "").strip().lower().replace("-", "_")
    for lang, names in (("en", ("en", "english")), ("fr", ("fr", "french"))):
        head = text.split("_", 1)[0].split(".", 1)[0]
        if head in names:
            return lang
    return DEFAULT


def _windows_ui_locale() -> str | None:
    try:
        import ctypes

        lang_id = ctypes.windll.kernel32.GetUserDefaultUILanguage()  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return None
    return _locale.windows_locale.get(lang_id)


def system_language(environ: Mapping[str, str] | None = None) -> str:
    """The language before a workbook is read: COMMPLAN_LANG, else the system's, else French."""
    env = os.environ if environ is None else environ
    if env.get("COMMPLAN_LANG", "").strip():
        return language_of(env["COMMPLAN_LANG"])
    for name in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = env.get(name, "").strip()
        if value:  # "C" or "POSIX" name no language: French
            return language_of(value)
    if sys.platform == "win32":
        found = _windows_ui_locale()
        if found:
            return language_of(found)
    with contextlib.suppress(ValueError):
        found = _locale.getlocale()[0]
        if found and found not in ("C", "POSIX"):
            return language_of(found)
    return DEFAULT


def set_language(lang: str) -> None:
    """Speak `lang` ("fr", "en", or a locale such as "en_GB") from now on."""
    global _current
    _current = lang if lang in LANGUAGES else language_of(lang)


def current() -> str:
    """The language spoken now: "fr" or "en"."""
    return _current


@contextlib.contextmanager
def speaking(lang: str) -> Iterator[None]:
    """Speak `lang` (or a locale's language) inside the block."""
    before = _current
    set_language(lang)
    try:
        yield
    finally:
        set_language(before)


def _(message: str) -> str:
    """`message` (English) in the current language."""
    return _catalog(_current).gettext(message)


gettext = _


def ngettext(singular: str, plural: str, n: int) -> str:
    """The singular or plural form for `n`, in the current language."""
    return _catalog(_current).ngettext(singular, plural, n)


def quoted(names: Iterable[str], at_most: int = 0) -> str:
    """Names quoted as the language quotes them and listed: "a", "b" or « a », « b »;
    with `at_most`, the first ones and "…"."""
    names = list(names)
    shown = names[:at_most] if at_most else names
    text = ", ".join(_('"{name}"').format(name=name) for name in shown)
    return text + (", …" if len(shown) < len(names) else "")


def N_(message: str) -> str:
    """Mark `message` for the catalog without translating it now (it is said later)."""
    return message


def install_argparse() -> None:
    """Make argparse's own texts (usage:, options:, error:…) speak the current language."""
    import argparse

    argparse._ = _  # type: ignore[attr-defined]
    argparse.ngettext = ngettext  # type: ignore[attr-defined]
