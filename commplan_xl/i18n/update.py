"""`python -m commplan_xl.i18n.update`: extract the sentences of the code into
messages.pot, merge them into the fr and en catalogs, compile the .mo files.

Run it from a checkout (it needs babel.cfg); then translate the new French entries of
fr/LC_MESSAGES/messages.po and run it again to compile them.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from babel.messages.frontend import CommandLineInterface

from commplan_xl.i18n import LANGUAGES, LOCALE_DIR

ROOT = LOCALE_DIR.parent.parent
POT = LOCALE_DIR / "messages.pot"


def pybabel(*args: str) -> None:
    CommandLineInterface().run(["pybabel", "-q", *args])


_DATES = re.compile(r'^"(POT-Creation-Date|PO-Revision-Date): [^"]*\\n"$', re.M)


def _calm(path: Path) -> None:
    """Fixed dates in a catalog's header: catalogs updated on several branches then differ
    only by their messages (and merge cleanly)."""
    text = path.read_text(encoding="utf-8")
    path.write_text(_DATES.sub(lambda m: f'"{m[1]}: 2026-01-01 00:00+0000\\n"', text),
                    encoding="utf-8")


def main() -> int:
    if not (ROOT / "babel.cfg").is_file():
        print(f"No babel.cfg in {ROOT}: run this from a checkout of commplan.", file=sys.stderr)
        return 2
    # No line numbers and sorted entries: catalogs merged from several branches stay calm.
    pybabel("extract", "-F", str(ROOT / "babel.cfg"), "-k", "N_", "--no-location",
            "--sort-output", "--project", "commplan", "-o", str(POT), str(ROOT))
    _calm(POT)
    for lang in LANGUAGES:
        po = LOCALE_DIR / lang / "LC_MESSAGES" / "messages.po"
        if po.exists():
            pybabel("update", "-i", str(POT), "-d", str(LOCALE_DIR), "-l", lang,
                    "--no-fuzzy-matching", "--ignore-obsolete")
        else:
            pybabel("init", "-i", str(POT), "-d", str(LOCALE_DIR), "-l", lang)
        _calm(po)
    pybabel("compile", "-d", str(LOCALE_DIR), "--statistics")
    untranslated = missing_french()
    for msgid in untranslated:
        print(f"no French yet: {msgid!r}")
    return 0


def missing_french() -> list[str]:
    """The msgids of the French catalog with no translation (or a fuzzy one)."""
    from babel.messages.pofile import read_po

    with open(LOCALE_DIR / "fr" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f)
    out = []
    for m in catalog:
        if not m.id:
            continue
        strings = m.string if isinstance(m.string, tuple | list) else (m.string,)
        if m.fuzzy or not all(strings):
            out.append(m.id if isinstance(m.id, str) else m.id[0])
    return out


if __name__ == "__main__":
    sys.exit(main())
