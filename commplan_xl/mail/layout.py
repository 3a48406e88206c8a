"""The page a mail's HTML part is laid out in: the built-in one or the site's own
`layout.html`, with the site's logo (shown inline by Content-ID) and signature."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Mapping
from dataclasses import replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from jinja2 import meta
from jinja2.exceptions import TemplateError

from commplan_xl.i18n import _
from commplan_xl.mail.attachments import resolve_attachment
from commplan_xl.mail.render import (  # Layout and the built-in one live with render_message
    InlineImage,
    Layout,
    RenderError,
    builtin_source,
    compile_layout,
    layout_environment,
    render_message,
    template_error,
)
from commplan_xl.model import Step
from commplan_xl.problems import WorkbookProblem
from commplan_xl.settings import Settings

SITE_LAYOUT = "layout.html"  # in the home folder: replaces the built-in layout
LOGO_WIDTH = 200  # the widest the logo is shown, in CSS pixels (a 400 px file stays sharp)


def load_layout(settings: Settings) -> Layout:
    """The site's layout: its layout.html (or the built-in one), logo and signature."""
    path = settings.home / SITE_LAYOUT
    source, origin, problem = builtin_source(), None, None
    if path.is_file():
        try:
            source, origin = _read_text(path, path.stat().st_mtime_ns), path
        except (OSError, UnicodeError) as exc:
            problem = _("the layout {path} could not be read ({error})").format(
                path=path, error=exc)
    logo, width, logo_problem = _logo(settings)
    return Layout(source=source, origin=origin, signature=settings.signature, logo=logo,
                  logo_alt=settings.sender_name, logo_width=width,
                  problem=problem or logo_problem)


@lru_cache(maxsize=8)
def _read_text(path: Path, _mtime_ns: int) -> str:
    return path.read_text("utf-8-sig")


def _logo(settings: Settings) -> tuple[InlineImage | None, int | None, str | None]:
    """The logo, its shown width and the problem that keeps it out of mails, if any."""
    name = settings.logo.strip()
    if not name:
        return None, None, None
    try:
        path = resolve_attachment(settings.attachments_dir, name)
        stat = path.stat()
    except ValueError as exc:
        return None, None, str(exc).replace(_("The attachment"), _("the logo"), 1)
    except OSError:
        return None, None, _('the logo "{name}" is not in {folder}: put the file there or '
                             "correct the logo setting").format(
                                 name=name, folder=settings.attachments_dir)
    try:
        digest, width = _image_info(path, stat.st_mtime_ns, stat.st_size)
    except (OSError, ValueError) as exc:
        return None, None, _('the logo "{name}" cannot be used: {error}').format(
            name=name, error=exc)
    domain = settings.sender_email.rpartition("@")[2]
    domain = domain if domain.isascii() and domain else "commplan.invalid"
    shown = min(width, LOGO_WIDTH) if width else None
    return InlineImage(cid=f"logo.{digest}@{domain}", path=path), shown, None


@lru_cache(maxsize=8)
def _image_info(path: Path, _mtime_ns: int, _size: int) -> tuple[str, int | None]:
    """A digest of the file (for its Content-ID) and its width in pixels when known."""
    data = path.read_bytes()
    if data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) >= 24:
        return _digest(data), struct.unpack(">I", data[16:20])[0]
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return _digest(data), struct.unpack("<H", data[6:8])[0]
    if data.startswith(b"\xff\xd8"):
        return _digest(data), _jpeg_width(data)
    raise ValueError(_("it must be a PNG, JPEG or GIF image (mail programs show those)"))


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:16]


def _jpeg_width(data: bytes) -> int | None:
    """The width in a JPEG's frame header (SOF0…SOF15 except DHT, JPG and DAC)."""
    at = 2
    while at + 9 < len(data) and data[at] == 0xFF:
        marker, length = data[at + 1], struct.unpack(">H", data[at + 2:at + 4])[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return struct.unpack(">H", data[at + 7:at + 9])[0]
        at += 2 + length
    return None


# ---------------------------------------------------------------- check


def layout_problems(settings: Settings,
                    context: Mapping[str, Any] | None = None) -> list[WorkbookProblem]:
    """What `check` reports about the layout, logo and signature. With an example
    `context` (one order's variables), unknown variables are found too."""
    layout = load_layout(settings)
    problems: list[WorkbookProblem] = []
    if layout.origin is not None:
        problems += [WorkbookProblem(SITE_LAYOUT, None, None, m)
                     for m in site_layout_problems(layout.source)]
    if layout.problem:
        where = "Settings" if layout.problem == _logo(settings)[2] else SITE_LAYOUT
        problems.append(_problem(where, layout.problem))
    signature_error = template_error(layout.signature, part="signature")
    if signature_error:
        problems.append(_problem("Settings", signature_error))
    if problems or context is None:
        return problems
    trial = replace(layout, problem=None)
    try:
        render_message(Step(plan="", number=1, delay=0, unit="days", subject="", body=""),
                       context, locale=settings.locale, layout=trial)
    except RenderError as exc:
        message = str(exc)
        where = "Settings" if exc.part == "signature" else SITE_LAYOUT
        problems.append(_problem(where, message))
    return problems


def _problem(where: str, message: str) -> WorkbookProblem:
    """A problem of layout.html, or of the Settings value `logo` or `signature` (each
    sentence names which)."""
    return WorkbookProblem(where, None, "value" if where == "Settings" else None, message)


def site_layout_problems(source: str, locale: str = "fr_FR") -> list[str]:
    """Sentences about a site's layout.html: it must compile and show `{{ content }}`."""
    try:
        compile_layout(locale, source)
    except TemplateError:
        return [template_error(source, part="layout") or _("the layout cannot be read")]
    used = meta.find_undeclared_variables(layout_environment(locale).parse(source))
    if "content" not in used:
        return [_("the layout never shows {{ content }}: write it where the body of the mail "
                  "goes")]
    return []

