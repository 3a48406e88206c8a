"""The mail's layout, logo and signature, checked on mails received by a real SMTP server."""

from __future__ import annotations

import re
import struct
import zlib
from email.message import EmailMessage
from pathlib import Path

import pytest

from commplan_xl.cli import main
from commplan_xl.mail.layout import layout_problems, site_layout_problems
from commplan_xl.settings import Settings
from tests.builders import DEFAULT_CUSTOMERS, DEFAULT_PLANS, make_workbook
from tests.test_run import DAY1, settings_for

BODY = (
    "Bonjour {{ customer.name }},\n"
    "votre commande **{{ order.order_id }}** avance.\n\n"
    "Suivez-la sur https://www.menuiseries-dupont.fr/suivi ou "
    "[votre espace](https://www.menuiseries-dupont.fr/compte).\n\n"
    "- retrait en magasin\n- pose à domicile\n\n"
    'Tapé par le service : <b>gras</b> <a href="https://x.fr">lien</a>'
)
SIGNATURE = "Bien cordialement,\n**{{ sender.name }}**\n{{ company_phone }}"


def png(width: int, height: int) -> bytes:
    """A real PNG image of one colour."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data)))

    rows = b"".join(b"\x00" + b"\x1d\x4e\xd8" * width for _ in range(height))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


@pytest.fixture
def home(tmp_path, smtp_server, clean_env):
    """A home whose step 1 has a Markdown body, with a logo and a signature in Settings."""
    plans = [dict(row) for row in DEFAULT_PLANS]
    plans[0]["body"] = BODY
    customers = [dict(row) for row in DEFAULT_CUSTOMERS]
    customers[0]["name"] = "<script>alert(1)</script> **Alice**"
    make_workbook(tmp_path, plans=plans, customers=customers,
                  settings=settings_for(smtp_server, logo="logo.png", signature=SIGNATURE))
    (tmp_path / "attachments" / "logo.png").write_bytes(png(400, 100))
    return tmp_path


def received(home: Path, smtp_server) -> EmailMessage:
    assert main(["run", "--today", DAY1, "--home", str(home)]) == 0
    assert len(smtp_server.received) == 1
    return smtp_server.received[0].message


def parts(msg: EmailMessage) -> tuple[str, str]:
    html = msg.get_body(preferencelist=("html",))
    text = msg.get_body(preferencelist=("plain",))
    assert html is not None and text is not None
    return (html.get_content().replace("\r\n", "\n"),
            text.get_content().replace("\r\n", "\n"))


def test_links_are_clickable_in_html_and_readable_in_text(home, smtp_server):
    """A URL in a body is a clickable link in the HTML and readable in the text part."""
    html, text = parts(received(home, smtp_server))
    assert re.search(r'<a href="https://www.menuiseries-dupont.fr/suivi"[^>]*>'
                     r"https://www.menuiseries-dupont.fr/suivi</a>", html)
    assert re.search(r'<a href="https://www.menuiseries-dupont.fr/compte"[^>]*>'
                     r"votre espace</a>", html)
    assert "Suivez-la sur https://www.menuiseries-dupont.fr/suivi ou " in text
    assert "votre espace (https://www.menuiseries-dupont.fr/compte)." in text
    assert "- retrait en magasin\n- pose à domicile" in text
    assert "<br" not in text and "<p" not in text


def test_double_stars_make_bold(home, smtp_server):
    """`**…**` is bold in the HTML and plain words in the text."""
    html, text = parts(received(home, smtp_server))
    assert re.search(r"<strong[^>]*>O1001</strong>", html)
    assert "votre commande O1001 avance." in text


def test_logo_is_inline_by_content_id_and_not_an_attachment(home, smtp_server):
    """The logo travels inside the mail, shown by cid:, and no mail program lists it."""
    msg = received(home, smtp_server)
    assert list(msg.iter_attachments()) == []
    images = [p for p in msg.walk() if p.get_content_maintype() == "image"]
    assert len(images) == 1
    logo = images[0]
    assert logo.get_content_type() == "image/png"
    assert logo.get_content_disposition() == "inline"
    assert logo.get_content() == (home / "attachments" / "logo.png").read_bytes()
    cid = logo["Content-ID"].strip("<>")
    html, _text = parts(msg)
    assert re.search(rf'<img src="cid:{re.escape(cid)}" alt="Service client" width="200"', html)
    related = [p for p in msg.walk() if p.get_content_type() == "multipart/related"]
    assert len(related) == 1


def test_logo_stays_inline_beside_real_attachments(home, smtp_server):
    """With a PDF attached, the PDF is the only attachment and the logo stays inline."""
    from openpyxl import load_workbook

    path = home / "workbooks" / "commplan.xlsx"
    wb = load_workbook(path)
    ws = wb["Plans"]
    header = [c.value for c in ws[1]]
    ws.cell(row=1, column=len(header) + 1, value="attachments")
    ws.cell(row=2, column=len(header) + 1, value="cgv.pdf")
    wb.save(path)
    (home / "attachments" / "cgv.pdf").write_bytes(b"%PDF-1.4\n%%EOF\n")
    msg = received(home, smtp_server)
    assert [a.get_filename() for a in msg.iter_attachments()] == ["cgv.pdf"]
    assert sum(1 for p in msg.walk() if p.get_content_maintype() == "image") == 1


def test_customer_name_with_script_arrives_escaped_and_literal(home, smtp_server):
    """A name `<script>…` is escaped in the HTML and kept as typed in the text."""
    html, text = parts(received(home, smtp_server))
    assert "<script" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; **Alice**," in html
    assert "Bonjour <script>alert(1)</script> **Alice**,\n" in text


def test_raw_html_typed_in_a_body_arrives_as_text(home, smtp_server):
    """HTML typed in a body is shown as text in the mail, not interpreted."""
    html, text = parts(received(home, smtp_server))
    assert "&lt;b&gt;gras&lt;/b&gt;" in html and "<b>" not in html
    assert ">lien</a>" not in html
    assert 'Tapé par le service : <b>gras</b> <a href="https://x.fr">lien</a>' in text


def test_signature_with_variables_under_the_body(home, smtp_server):
    """The Settings signature (Markdown, variables) closes both parts, under the body."""
    html, text = parts(received(home, smtp_server))
    assert text.rstrip().endswith("-- \nBien cordialement,\nService client\n01 23 45 67 89")
    signature = re.search(r'class="signature"[^>]*>(.*?)</td>', html, re.S)
    assert signature and re.search(r"<strong[^>]*>Service client</strong>", signature.group(1))
    assert html.index('class="content"') < html.index('class="signature"')


def test_built_in_layout_is_a_600px_table_with_inline_styles(home, smtp_server):
    """The built-in layout is a table at most 600 px wide, every style written inline."""
    html, _text = parts(received(home, smtp_server))
    assert "<style" not in html
    assert 'role="presentation"' in html and "max-width: 600px" in html
    assert '<meta name="viewport"' in html
    assert re.search(r'<p style="[^"]*margin[^"]*">', html)
    assert re.search(r'<a href="[^"]+" style="[^"]*color', html)


def test_site_layout_replaces_the_built_in_one(home, smtp_server):
    """A layout.html in the home folder lays out the mail, with variables and its styles."""
    (home / "layout.html").write_text(
        "<html><head><style>p { color: #123456; }</style></head><body>"
        "<h1>{{ sender.name }} pour {{ customer.name }}</h1>{{ content }}"
        "<footer>{{ signature }}</footer></body></html>", encoding="utf-8")
    html, _text = parts(received(home, smtp_server))
    assert "<h1>Service client pour &lt;script&gt;alert(1)&lt;/script&gt; **Alice**</h1>" in html
    assert re.search(r'<p style="color: #123456;">Bonjour', html)
    assert "max-width: 600px" not in html


def test_missing_logo_holds_the_mail_and_check_says_why(home, smtp_server, capsys):
    """A logo file that is not there: check names it, and the mail waits (failed, retried)."""
    (home / "attachments" / "logo.png").unlink()
    assert main(["check", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "Settings (value) : le logo « logo.png » n'est pas dans" in out
    assert main(["run", "--today", DAY1, "--home", str(home)]) == 1
    assert smtp_server.received == []
    (home / "attachments" / "logo.png").write_bytes(png(120, 40))
    assert main(["run", "--today", DAY1, "--home", str(home)]) == 0
    assert len(smtp_server.received) == 1


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("<p>{{ content }</p>", 'the layout cannot be read: a "}}" is missing at the end of '
         "line 1"),
        ("<p>\n{% if logo %}{{ content }}</p>",
         'the layout cannot be read: the "{% if %}" of line 2 is never closed'),
        ("<p>Bonjour</p>", "the layout never shows {{ content }}"),
        ("<p>{{ content|nope }}</p>", 'uses the filter "nope", which does not exist'),
    ],
)
def test_site_layout_problems_are_sentences(source: str, expected: str) -> None:
    """A broken layout.html is described in a sentence (syntax with its line, no content)."""
    problems = site_layout_problems(source)
    assert len(problems) == 1 and expected in problems[0]


def test_check_reports_the_site_layout_and_signature_problems(home, capsys):
    """`check` shows layout.html's and the signature's problems, with unknown variables."""
    (home / "layout.html").write_text("<body>{{ content }}\n{{ order.magasin }}</body>",
                                      encoding="utf-8")
    assert main(["check", "--home", str(home)]) == 1
    out = capsys.readouterr().out
    assert "layout.html : la mise en page utilise « order.magasin », qui n'existe pas" in out
    (home / "layout.html").write_text("<body>\n{{ content }</body>", encoding="utf-8")
    assert main(["check", "--home", str(home)]) == 1
    assert ("layout.html : la mise en page est illisible : il manque un « }} » à la fin "
            "de la ligne 2" in capsys.readouterr().out)
    (home / "layout.html").unlink()
    assert main(["check", "--home", str(home)]) == 0
    capsys.readouterr()


def test_signature_syntax_error_is_a_settings_problem(tmp_path) -> None:
    """A signature that cannot compile is reported on the Settings sheet."""
    settings = Settings(home=tmp_path, signature="Cordialement {{ sender.name }")
    (found,) = layout_problems(settings)
    assert str(found).startswith('Settings (value): the signature cannot be read: a "}}" is '
                                 "missing at the end of line 1")


def test_a_logo_that_is_not_an_image_is_refused(tmp_path) -> None:
    """A logo must be a PNG, JPEG or GIF: anything else is a problem check shows."""
    (tmp_path / "attachments").mkdir()
    (tmp_path / "attachments" / "logo.svg").write_text("<svg/>")
    settings = Settings(home=tmp_path, logo="logo.svg", attachments_dir=tmp_path / "attachments")
    (found,) = layout_problems(settings)
    assert "must be a PNG, JPEG or GIF image" in found.message


def test_preview_html_shows_the_logo_by_itself_and_never_opens_in_tests(home, capsys):
    """preview writes the HTML beside the .eml with the logo inside it as a data: URI (a
    browser shows it without the mail), and opens no browser when not at a terminal."""
    import base64

    assert main(["preview", "O1001", "1", "--home", str(home)]) == 0
    out = capsys.readouterr().out
    assert "est ouvert" not in out and "Ouvrez le fichier .html dans un navigateur" in out
    (eml,) = (home / "previews").glob("*.eml")
    page = eml.with_suffix(".html").read_text(encoding="utf-8")
    logo = base64.b64encode((home / "attachments" / "logo.png").read_bytes()).decode()
    assert f'src="data:image/png;base64,{logo}"' in page
    assert "cid:" not in page
    assert "<strong" in page and "&lt;script&gt;" in page
