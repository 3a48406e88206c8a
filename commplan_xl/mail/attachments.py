"""Safe paths for files the workbook names (attachments)."""

from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

from commplan_xl.i18n import _
from commplan_xl.problems import CommplanError


def resolve_attachment(attachments_dir: Path, name: str) -> Path:
    """The path of attachment `name` inside `attachments_dir`; does not check it exists.

    Raises ValueError with a sentence when the name is empty, absolute, climbs with "..",
    or (following symlinks) ends up outside the attachments folder.
    """
    text = str(name).strip()
    if not text:
        raise ValueError(_("The attachment name is empty."))
    # Staff may type Windows paths on any system: judge both spellings.
    if (
        PurePosixPath(text).is_absolute()
        or PureWindowsPath(text).is_absolute()
        or PureWindowsPath(text).drive
    ):
        raise ValueError(
            _('The attachment "{name}" is a full path; put the file in the attachments '
              "folder and write only its name.").format(name=text)
        )
    if ".." in PureWindowsPath(text).parts:
        raise ValueError(
            _('The attachment "{name}" points outside the attachments folder ("..").').format(
                name=text)
        )
    base = Path(attachments_dir).resolve()
    target = (base / text).resolve()
    if not target.is_relative_to(base):
        raise ValueError(
            _('The attachment "{name}" points outside the attachments folder {folder}.').format(
                name=text, folder=base)
        )
    return target


def attachment_file(attachments_dir: Path, name: str, plans_row: int) -> Path:
    """The existing file of attachment `name` (Plans row `plans_row`), as a run attaches it.

    Raises CommplanError with the sentence a run records when it cannot attach the file.
    """
    try:
        path = resolve_attachment(attachments_dir, name)
    except ValueError as exc:
        raise CommplanError(_("Plans row {row} (attachments): {error}").format(
            row=plans_row, error=exc)) from None
    if not path.is_file():
        raise CommplanError(
            _('the attachment "{name}" (Plans row {row}) is not in {folder}: put the file '
              "there or correct its name").format(name=name, row=plans_row,
                                                  folder=attachments_dir)
        )
    return path
