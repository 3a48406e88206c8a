"""`commplan init`: the home folders and a ready-to-edit workbook with demo data.

The workbook is French by default (sheets Commandes, Clients, Plans, Variables, Paramètres,
French headers, statuses and yes/no words, templates using the French names) or English;
its first sheet, "Mode d'emploi" ("How to"), tells staff how to use it. Names come from
excel/names.py.

The workbook is written once, here, with openpyxl; the tool never saves the staff's copy
through openpyxl again: an openpyxl save rebuilds the file and drops what it does not know
(shapes, text boxes, some chart and validation features).
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Border, Font, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from commplan_xl.core.units import UNIT_TABLE, parse_unit
from commplan_xl.excel import names
from commplan_xl.excel.safe_replace import lock_file
from commplan_xl.excel.sheet_xml import PLAN_LIST
from commplan_xl.i18n import _
from commplan_xl.model import Status
from commplan_xl.problems import CommplanError, WorkbookLocked
from commplan_xl.settings import KEYS as SETTING_KEYS

WORKBOOK_NAME = "commplan.xlsx"
# The input sheets by key, in tab order (after the "Mode d'emploi").
SHEETS = ("orders", "customers", "plans", "variables", "settings")
HOW_TO_TITLE = names.Name("How to", "Mode d'emploi")
FORMATTED_ROWS = 1000  # rows below the header that get formats ready
EXCEL_ROWS = 1_048_576  # drop-downs cover the whole column
PLAN_LIST_SOURCE = f"OFFSET({PLAN_LIST}!$A$2,0,0,MAX(1,COUNTA({PLAN_LIST}!$A:$A)-1),1)"
# Sheets that stay short get fewer ready rows (plans: at most 10 steps each).
READY_ROWS = {"plans": 300, "variables": 100, "settings": 100}
DATE_FORMAT = "DD/MM/YYYY"
TEXT_FORMAT = "@"
LOCALES = {"fr": "fr_FR", "en": "en_GB"}


def yes_no(lang: str) -> tuple[str, str]:
    """The yes/no drop-down of a workbook in `lang`."""
    return names.YES(lang), names.NO(lang)


def units(lang: str) -> tuple[str, ...]:
    """The Plans unit drop-down: the workbook's language first, then the other's."""
    english = tuple(row.english for row in UNIT_TABLE)
    french = tuple(row.french for row in UNIT_TABLE)
    return french + english if lang == "fr" else english + french


def statuses(lang: str) -> tuple[str, ...]:
    """The Orders status drop-down."""
    return tuple(names.STATUSES[status.value](lang) for status in Status)

DEMO_SENDER_EMAIL = "service.client@example.com"
DEMO_SENDER_NAME = "Menuiseries Dupont — Service client"
CGV_PDF = "conditions-generales-de-vente.pdf"
GUIDE_PDF = "guide-entretien.pdf"
BAIE = "Baie vitrée"
POSE = "Pose fenêtres"

_HEADER_FONT = Font(bold=True, color="1F3864")
_HEADER_FILL = PatternFill("solid", fgColor="DDEBF7")
_HEADER_BORDER = Border(bottom=Side(style="medium", color="8EA9DB"))
_TOP_WRAP = Alignment(vertical="top", wrap_text=True)
_TOP = Alignment(vertical="top")


@dataclass(frozen=True)
class Column:
    """One column of a sheet as `init` lays it out.

    `name` is the column's key (names.COLUMNS gives its header in each language) or, for
    the demo's extra columns, its English header, `fr` the French one. In `help`,
    `$Orders`-like words are names in the workbook's language (see `_words`).
    """

    name: str
    help: str  # the header cell's comment, for staff
    width: float = 14
    kind: str = ""  # "date", "text", "wrap" or "" (general)
    fr: str = ""  # the French header of an extra column


def header(sheet: str, column: Column, lang: str) -> str:
    """The header `init` writes for `column` of `sheet` (a key) in `lang`."""
    if column.name in names.COLUMNS.get(sheet, {}):
        return names.column_title(sheet, column.name, lang)
    return column.fr if lang == "fr" and column.fr else column.name


# Template variables of the demo's templates and help, English -> French names.
_FRENCH_VARIABLES = {
    "order.order_id": "commande.n_commande",
    "order.product": "commande.produit",
    "order.store": "commande.point_de_vente",
    "customer.name": "client.nom",
    "customer.telephone": "client.telephone",
}


def in_language(text: str, lang: str) -> str:
    """A help text or demo template for a workbook in `lang`: its `$words` named in `lang`,
    and in French its variables by their French names (`{{ client.nom }}`)."""
    text = Template(text).safe_substitute(_words(lang))
    if lang == "fr":
        for english, french in _FRENCH_VARIABLES.items():
            text = text.replace(english, french)
    return text


def _words(lang: str) -> dict[str, str]:
    """The `$words` of help texts: sheet names ($Orders), column headers ($start_date,
    $from, $date_de_livraison), statuses ($active) and yes/no ($yes, $no)."""
    words = {names.SHEETS[key].en: names.sheet_title(key, lang) for key in names.SHEETS}
    words.update(start_date=names.column_title("orders", "start_date", lang),
                 **{"from": names.column_title("plans", "from", lang)},
                 date_de_livraison="date de livraison" if lang == "fr" else "date_de_livraison",
                 yes=names.YES(lang), no=names.NO(lang))
    words.update({status: name(lang) for status, name in names.STATUSES.items()})
    return words


def _unit_help() -> str:
    """The unit column's help: every unit's French and English name, and their notes."""
    french = ", ".join(row.french for row in UNIT_TABLE)
    english = ", ".join(row.english for row in UNIT_TABLE)
    notes = (row.help_fr for row in UNIT_TABLE if row.help_fr)
    return " ".join((f"Unité du délai : {french} (ou {english}).", *notes))


# Column layouts: the required columns first, in the README's order. Help texts are French:
# the staff who edit are French.
ORDERS = (
    Column("order_id", "Numéro de commande, unique (ex. CMD-2026-0001). Saisi comme texte.",
           17, "text"),
    Column("customer_id", "Code du client, tel qu'il figure dans l'onglet $Customers "
           "(ex. C0001). Saisi comme texte pour garder les zéros.", 13, "text"),
    Column("plan", "Nom du plan de messages à suivre, choisi dans la liste (onglet Plans).", 18),
    Column("start_date", "Date de départ du plan (date de commande), au format JJ/MM/AAAA. "
           "Les délais des étapes se comptent à partir d'elle.", 13, "date"),
    Column("status", "$active (ou vide) : les messages partent ; $paused : plus rien ne part "
           "jusqu'à la reprise ; $cancelled ou $done : plus rien ne part.", 11),
    Column("product", "Produit commandé. Utilisable dans les mails : {{ order.product }}.", 38,
           fr="produit"),
    Column("store", "Point de vente. Utilisable dans les mails : {{ order.store }}.", 24,
           fr="point de vente"),
    Column("date_de_livraison", "Date de livraison (JJ/MM/AAAA). Des étapes peuvent compter à "
           "partir d'elle (colonne $from de Plans). Vide = ces étapes attendent.", 17, "date",
           fr="date de livraison"),
    Column("hold_steps", "Numéros d'étapes à NE PAS envoyer pour cette commande, séparés par "
           "; (ex. 3;4). Laisser vide en général.", 12, "text"),
)
CUSTOMERS = (
    Column("customer_id", "Code client, unique (ex. C0001). Saisi comme texte pour garder "
           "les zéros.", 13, "text"),
    Column("name", "Nom du client tel qu'il apparaît dans les mails : {{ customer.name }}.", 26),
    Column("email", "Adresse e-mail. Plusieurs adresses : séparez-les par ; "
           "(ex. a@exemple.fr; b@exemple.fr).", 46),
    Column("opt_out", "$yes = le client ne veut plus de mails : rien ne lui est envoyé. "
           "Vide ou $no = il reçoit les mails.", 9),
    Column("telephone", "Téléphone du client (colonne libre). Toute colonne ajoutée devient "
           "une variable : {{ customer.telephone }}.", 16, "text", fr="téléphone"),
)
PLANS = (
    Column("plan", "Nom du plan. Une ligne par message ; toutes les lignes d'un plan portent "
           "le même nom.", 16),
    Column("step", "Numéro du message dans le plan, de 1 à 10, sans doublon.", 6),
    Column("delay", "Délai avant l'envoi, nombre ≥ 0 (ex. 5 ; 1,5 pour un mois et demi). "
           "Nombre entier pour les jours.", 7),
    Column("unit", _unit_help(), 13),
    Column("subject", "Objet du mail. Variables entre doubles accolades, "
           "ex. {{ order.order_id }}.", 44, "wrap"),
    Column("body", "Texte du mail. Variables entre doubles accolades : {{ customer.name }}, "
           "{{ step.due_date|date }}… La liste complète : commande « commplan variables ».",
           80, "wrap"),
    Column("from", "Colonne de date de l'onglet $Orders à partir de laquelle compter "
           "(vide = $start_date), ex. $date_de_livraison.", 17),
    Column("attachments", "Pièces jointes : noms de fichiers du dossier attachments, séparés "
           "par ;", 32, "wrap"),
    Column("active", "$yes (ou vide) = ce message est envoyé ; $no = il n'est plus envoyé.", 8),
    Column("required", "$yes = message obligatoire (ex. conditions de vente) : envoyé même si "
           "une étape suivante est déjà due. Vide = $no.", 10),
)
VARIABLES = (
    Column("variable", "Nom de la constante, utilisable dans tous les mails : "
           "{{ company_phone }}. Lettres, chiffres et _ seulement.", 20),
    Column("value", "Valeur insérée dans les mails.", 60, "text"),
    Column("description", "À quoi sert cette constante (pour l'équipe, jamais envoyé).", 50),
)
SETTINGS = (
    Column("key", "Nom du réglage. Ne pas modifier cette colonne.", 16, "text"),
    Column("value", "Valeur du réglage. Vide = valeur par défaut.", 42, "text"),
    Column("description", "Explication du réglage.", 90, "wrap"),
)
LAYOUTS: dict[str, tuple[Column, ...]] = {
    "orders": ORDERS, "customers": CUSTOMERS, "plans": PLANS,
    "variables": VARIABLES, "settings": SETTINGS,
}

# The values the starter workbook fills in; every other key of the Settings table gets an
# empty value (its default).
SETTING_VALUES: dict[str, str] = {
    "sender_email": DEMO_SENDER_EMAIL,
    "sender_name": DEMO_SENDER_NAME,
    "smtp_host": "localhost",
    "smtp_port": "25",
    "timezone": "Europe/Paris",
    "holidays": "FR",
    "catch_up_days": "7",
}

VARIABLE_ROWS: tuple[tuple[str, str, str], ...] = (
    ("company_phone", "01 23 45 67 89", "Téléphone du service client."),
    ("company_website", "www.menuiseries-dupont.example.fr", "Site internet."),
    ("opening_hours", "du lundi au vendredi de 9 h à 18 h, le samedi de 9 h à 12 h",
     "Horaires d'ouverture des points de vente."),
)


# ---------------------------------------------------------------------------
# Demo data
# ---------------------------------------------------------------------------

_SIGNATURE = "Bien cordialement,\n{{ sender.name }}\n{{ company_phone }} – {{ company_website }}"

BAIE_STEPS: tuple[tuple[int, float, str, str, str, str, bool], ...] = (
    # step, delay, unit, subject, body, attachments, required
    (1, 5, "days", "Votre commande {{ order.order_id }} est en cours de traitement",
     "Bonjour {{ customer.name }},\n\n"
     "Merci pour votre confiance ! Votre commande {{ order.order_id }} "
     "({{ order.product }}) est bien enregistrée et en cours de traitement par notre équipe.\n\n"
     "Vous trouverez ci-joint nos conditions générales de vente, à conserver avec votre bon "
     "de commande.\n\n"
     "Nous vous tiendrons informé(e) à chaque étape, jusqu'à la mise à disposition de votre "
     "baie vitrée dans notre point de vente {{ order.store }}.\n\n"
     "Une question ? Appelez-nous au {{ company_phone }}, {{ opening_hours }}.\n\n"
     + _SIGNATURE, CGV_PDF, True),
    (2, 15, "days", "Votre baie vitrée entre en planning de fabrication",
     "Bonjour {{ customer.name }},\n\n"
     "Bonne nouvelle : votre commande {{ order.order_id }} vient d'entrer dans le planning de "
     "fabrication de notre atelier.\n\n"
     "Nos menuisiers préparent maintenant les profilés et les vitrages aux dimensions "
     "de votre {{ order.product }}.\n\n"
     "Vous n'avez rien à faire pour le moment : nous revenons vers vous dès le début de la "
     "fabrication.\n\n" + _SIGNATURE, "", False),
    (3, 1, "months", "Votre baie vitrée est en cours de fabrication",
     "Bonjour {{ customer.name }},\n\n"
     "La fabrication de votre {{ order.product }} (commande {{ order.order_id }}) a commencé "
     "dans notre atelier.\n\n"
     "Chaque menuiserie est assemblée et contrôlée à la main ; nous vous écrirons dès qu'elle "
     "sera terminée.\n\n" + _SIGNATURE, "", False),
    (4, 1.5, "months", "Votre baie vitrée est fabriquée",
     "Bonjour {{ customer.name }},\n\n"
     "Votre {{ order.product }} (commande {{ order.order_id }}) est fabriquée et a passé notre "
     "contrôle qualité.\n\n"
     "Elle part maintenant vers notre point de vente {{ order.store }}. Nous vous "
     "préviendrons dès qu'elle y sera disponible.\n\n" + _SIGNATURE, "", False),
    (5, 2, "months", "Votre baie vitrée vous attend à {{ order.store }}",
     "Bonjour {{ customer.name }},\n\n"
     "Votre {{ order.product }} (commande {{ order.order_id }}) est disponible depuis le "
     "{{ step.due_date|date }} dans notre point de vente {{ order.store }}.\n\n"
     "Vous pouvez venir la retirer {{ opening_hours }}, muni(e) de votre bon de commande.\n\n"
     "Vous trouverez ci-joint notre guide d'entretien pour en profiter longtemps.\n\n"
     + _SIGNATURE, GUIDE_PDF, False),
)

POSE_STEPS: tuple[tuple[int, float, str, str, str, str, str], ...] = (
    # step, delay, unit, from, subject, body, attachments
    (1, 2, "jours ouvrés", "start_date",
     "Votre projet de pose {{ order.order_id }} : commande bien reçue",
     "Bonjour {{ customer.name }},\n\n"
     "Nous avons bien reçu votre commande {{ order.order_id }} : {{ order.product }}, "
     "avec pose par nos équipes.\n\n"
     "Vous trouverez ci-joint nos conditions générales de vente.\n\n" + _SIGNATURE, CGV_PDF),
    (2, 5, "jours ouvrés", "start_date", "Rendez-vous de métrage pour vos fenêtres",
     "Bonjour {{ customer.name }},\n\n"
     "Notre technicien va vous appeler au {{ customer.telephone }} pour convenir d'un "
     "rendez-vous de métrage à votre domicile.\n\n"
     "Si ce numéro n'est plus le bon, appelez-nous au {{ company_phone }}.\n\n" + _SIGNATURE,
     ""),
    (3, 2, "jours ouvrés", "date_de_livraison", "Votre pose est planifiée",
     "Bonjour {{ customer.name }},\n\n"
     "Vos menuiseries sont livrées et votre pose est planifiée. Notre équipe de pose vous "
     "contactera la veille pour confirmer l'heure d'arrivée.\n\n"
     "Pensez à dégager l'accès aux fenêtres à remplacer.\n\n" + _SIGNATURE, ""),
    (4, 10, "jours ouvrés", "date_de_livraison", "Tout s'est bien passé, {{ customer.name }} ?",
     "Bonjour {{ customer.name }},\n\n"
     "Vos nouvelles fenêtres sont posées depuis quelques jours. Nous espérons que vous en "
     "êtes pleinement satisfait(e) !\n\n"
     "Vous trouverez ci-joint notre guide d'entretien. Pour toute remarque, notre point de "
     "vente {{ order.store }} reste à votre écoute.\n\n" + _SIGNATURE, GUIDE_PDF),
)

# customer_id, name, email, opt_out, telephone
# customer_id, name, email, opt_out, telephone. The addresses are at documentation domains
# (example.com, .net, .org): the tool never sends to them, so the demo rows reach nobody.
DEMO_CUSTOMERS: tuple[tuple[str, str, str, str, str], ...] = (
    ("C0001", "Éloïse Lefèvre", "eloise.lefevre@example.net", "non", "06 12 34 56 78"),
    ("C0002", "François Nguyễn", "francois.nguyen@example.com", "non", "06 23 45 67 89"),
    ("C0003", "Hélène Mercier", "helene.mercier@example.org", "non", "07 34 56 78 90"),
    ("C0004", "Jérôme Bénard", "jerome.benard@example.com; secretariat.benard@mail.example.org",
     "non", "04 78 12 34 56"),
    ("C0005", "Anaïs Noël", "anais.noel@example.net", "non", "06 45 67 89 01"),
    ("C0006", "Maëlle Côté", "maelle.cote@example.com", "non", "06 56 78 90 12"),
    ("C0007", "Raphaël Dupré", "raphael.dupre@example.org", "oui", "06 67 89 01 23"),
    ("C0008", "Léa Fournier", "lea.fournier@example.com", "non", "07 78 90 12 34"),
    ("C0009", "Aurélien Lemaître", "aurelien.lemaitre@example.net", "non", "06 89 01 23 45"),
    ("C0010", "Inès Bouchard", "ines.bouchard@example.com", "non", "06 90 12 34 56"),
)
# `commplan demo` sends to its own local server: its customers get addresses at this
# domain (.test is for test servers, and the tool sends to it).
DEMO_SERVER_DOMAIN = "clients.test"


def _demo_address(text: str, domain: str | None) -> str:
    return text if domain is None else re.sub(r"@[^;,\s]+", f"@{domain}", text)


_BAIE_PRODUCT = "baie vitrée coulissante alu 240 × 215 cm"
_POSE_PRODUCT = "4 fenêtres PVC double vitrage"


@dataclass(frozen=True)
class DemoOrder:
    """A demo order, its dates given in days before `today` (None = empty cell)."""

    order_id: str
    customer_id: str
    plan: str
    start_ago: int
    status: str = ""
    product: str = _BAIE_PRODUCT
    store: str = "Lyon Part-Dieu"
    delivery_ago: int | None = None  # negative = in the future


# With catch_up_days 7, on `today` these give: sends of steps 1, 2, 3 and 4 of Baie vitrée,
# missed steps, a superseded step (P1: steps 1 and 2 due in the same week), a paused, a done
# and an opted-out order, one not due yet, and one waiting for its delivery date.
DEMO_ORDERS: tuple[DemoOrder, ...] = (
    DemoOrder("CMD-2026-0001", "C0001", BAIE, 6),
    DemoOrder("CMD-2026-0002", "C0002", BAIE, 16, store="Villeurbanne"),
    DemoOrder("CMD-2026-0003", "C0003", BAIE, 33),
    DemoOrder("CMD-2026-0004", "C0004", BAIE, 47, store="Bron"),
    DemoOrder("CMD-2026-0005", "C0005", BAIE, 75, status="done"),
    DemoOrder("CMD-2026-0006", "C0006", BAIE, 20, status="paused", store="Villeurbanne"),
    DemoOrder("CMD-2026-0007", "C0007", BAIE, 7),
    DemoOrder("CMD-2026-0008", "C0008", POSE, 9, product=_POSE_PRODUCT),
    DemoOrder("CMD-2026-0009", "C0009", POSE, 40, product=_POSE_PRODUCT, store="Bron",
              delivery_ago=4),
    DemoOrder("CMD-2026-0010", "C0010", POSE, 20, product=_POSE_PRODUCT, delivery_ago=-10),
    DemoOrder("CMD-2026-0011", "C0001", POSE, 1, product="2 fenêtres PVC de toit"),
)


def demo_note(order_ids: Iterable[str], customer_ids: Iterable[str]) -> str | None:
    """A sentence for `check` while the workbook still holds demo rows of `init`."""
    orders = sorted({o.order_id for o in DEMO_ORDERS} & set(order_ids))
    customers = {c[0] for c in DEMO_CUSTOMERS} & set(customer_ids)
    if orders:
        return _("The workbook still holds the demo orders ({first}…) that `commplan init` "
                 "wrote: replace them with your own customers and orders (their example "
                 "addresses are never sent to).").format(first=orders[0])
    if customers:
        return _("The workbook still holds the demo customers that `commplan init` wrote: "
                 "replace them with your own (their example addresses are never sent to).")
    return None


def demo_rows(today: dt.date, lang: str = "fr", *, domain: str | None = None
              ) -> dict[str, list[list[Any]]]:
    """The demo data rows of each sheet (by key), values in column order, dates relative to
    `today`, words and templates in `lang`; the customers' addresses at `domain` when
    given."""

    def ago(days: int | None) -> dt.date | None:
        return None if days is None else today - dt.timedelta(days=days)

    yes, no = yes_no(lang)

    def unit(text: str) -> str:
        row = next(r for r in UNIT_TABLE if r.unit == parse_unit(text))
        return row.french if lang == "fr" else row.english

    def column(name: str) -> str:
        return header("orders", next(c for c in ORDERS if c.name == name), lang)

    def status(text: str) -> str:
        return names.STATUSES[text or "active"](lang)

    plans: list[list[Any]] = [
        [BAIE, n, delay, unit(u), in_language(subject, lang), in_language(body, lang), "", att,
         yes, yes if req else no]
        for n, delay, u, subject, body, att, req in BAIE_STEPS
    ] + [
        [POSE, n, delay, unit(u), in_language(subject, lang), in_language(body, lang),
         column(src), att, yes, no]
        for n, delay, u, src, subject, body, att in POSE_STEPS
    ]
    orders = [
        [o.order_id, o.customer_id, o.plan, ago(o.start_ago), status(o.status), o.product,
         o.store, ago(o.delivery_ago), ""]
        for o in DEMO_ORDERS
    ]
    customers = [[c[0], c[1], _demo_address(c[2], domain), yes if c[3] == "oui" else no, c[4]]
                 for c in DEMO_CUSTOMERS]
    return {
        "orders": orders,
        "customers": customers,
        "plans": plans,
        "variables": [list(v) for v in VARIABLE_ROWS],
    }


# ---------------------------------------------------------------------------
# Workbook
# ---------------------------------------------------------------------------


def create_workbook(path: Path, *, demo: bool = True, today: dt.date, lang: str = "fr",
                    demo_domain: str | None = None) -> None:
    """Write the ready-to-edit workbook at `path` (demo rows when `demo`, their customers'
    addresses at `demo_domain` when given) in `lang` ("fr" or "en"): its "Mode d'emploi"
    first, then the input sheets, then the tool's hidden list of plans."""
    if lang not in names.LANGUAGES:
        raise CommplanError(f'"{lang}" is not a language of commplan; write fr or en.')
    wb = Workbook()
    wb.remove(wb.active)
    _write_how_to(wb.create_sheet(HOW_TO_TITLE(lang)), lang)
    rows = demo_rows(today, lang, domain=demo_domain) if demo else {}
    for key in SHEETS:
        ws = wb.create_sheet(names.sheet_title(key, lang))
        layout = LAYOUTS[key]
        _write_header(ws, key, layout, lang)
        data = _setting_rows(demo, lang) if key == "settings" else rows.get(key, [])
        _write_rows(ws, data)
        _format_columns(ws, layout, len(data), READY_ROWS.get(key, FORMATTED_ROWS))
    _add_plan_list(wb, rows.get("plans", []))
    _add_validations(wb, lang)
    wb.active = 0
    _save_atomically(wb, path)


def _setting_rows(demo: bool, lang: str) -> list[list[Any]]:
    """Every Settings key with its description; without demo the sender is left for staff
    to fill in."""
    values = {**SETTING_VALUES, "locale": LOCALES[lang]}
    rows = []
    for key in SETTING_KEYS:
        value = values.get(key.name, "")
        if not demo and key.name.startswith("sender"):
            value = ""
        rows.append([key.name, value, key.description])
    return rows


def _write_header(ws: Worksheet, sheet: str, layout: Sequence[Column], lang: str) -> None:
    for index, column in enumerate(layout, start=1):
        cell = ws.cell(row=1, column=index, value=header(sheet, column, lang))
        cell.font = _HEADER_FONT
        cell.fill = _HEADER_FILL
        cell.border = _HEADER_BORDER
        cell.alignment = Alignment(vertical="center")
        comment = Comment(in_language(column.help, lang), "commplan")
        comment.width, comment.height = 300, 110  # points; the default box cuts the text
        cell.comment = comment
        ws.column_dimensions[get_column_letter(index)].width = column.width
    ws.freeze_panes = "A2"
    ws.row_dimensions[1].height = 20
    ws.auto_filter.ref = f"A1:{get_column_letter(len(layout))}1"


def _write_rows(ws: Worksheet, rows: list[list[Any]]) -> None:
    for r, values in enumerate(rows, start=2):
        for c, value in enumerate(values, start=1):
            if value is None or value == "":
                continue
            # Text that starts with "=" would be written as a formula; none of ours does.
            ws.cell(row=r, column=c, value=value)


def _format_columns(ws: Worksheet, layout: Sequence[Column], n_rows: int, ready: int) -> None:
    """Formats on the sheet's `ready` rows too, so rows staff add get them."""
    last = max(ready, n_rows) + 1
    for c, column in enumerate(layout, start=1):
        # Only cells that need a style are created: fewer cells, a faster file.
        end = last if column.kind else n_rows + 1
        for r in range(2, end + 1):
            cell = ws.cell(row=r, column=c)
            if column.kind == "date":
                cell.number_format = DATE_FORMAT
            elif column.kind == "text":
                cell.number_format = TEXT_FORMAT
            cell.alignment = _TOP_WRAP if column.kind == "wrap" else _TOP


def _add_plan_list(wb: Workbook, plans: list[list[Any]]) -> None:
    """The tool's hidden sheet listing each plan once, for the Orders plan drop-down (each
    run writes it again from Plans)."""
    ws = wb.create_sheet(PLAN_LIST)
    ws.append(["plan"])
    seen: set[str] = set()
    for row in plans:
        if row and row[0] and str(row[0]).casefold() not in seen:
            seen.add(str(row[0]).casefold())
            ws.append([row[0]])
    ws.sheet_state = "hidden"


def _list_validation(source: str, *, prompt: str, strict: bool = True) -> DataValidation:
    """A drop-down list; `strict` refuses other values, else it only suggests."""
    dv = DataValidation(type="list", formula1=source, allow_blank=True)
    dv.showDropDown = False  # openpyxl's inverted flag: False shows the arrow
    dv.prompt, dv.promptTitle = prompt, "commplan"
    dv.showInputMessage = False
    dv.showErrorMessage = True
    dv.errorStyle = "stop" if strict else "warning"
    dv.errorTitle = "commplan"
    dv.error = "Choisissez une valeur dans la liste."
    if not strict:
        dv.showErrorMessage = False
    return dv


def _quoted(values: Sequence[str]) -> str:
    return '"' + ",".join(values) + '"'


def _sheet_ref(title: str) -> str:
    """A sheet's name in a formula ('Paramètres'!…)."""
    return "'" + title.replace("'", "''") + "'"


def _add_validations(wb: Workbook, lang: str) -> None:
    span = f"2:{EXCEL_ROWS}"  # the whole column, like Excel's own drop-downs

    def col(sheet: str, name: str) -> str:
        index = [c.name for c in LAYOUTS[sheet]].index(name) + 1
        letter = get_column_letter(index)
        first, last = span.split(":")
        return f"{letter}{first}:{letter}{last}"

    def add(sheet: str, dv: DataValidation, *columns: str) -> None:
        wb[names.sheet_title(sheet, lang)].add_data_validation(dv)
        for name in columns:
            dv.add(col(sheet, name))

    def first_column(sheet: str) -> str:
        return f"{_sheet_ref(names.sheet_title(sheet, lang))}!$A$2:$A${EXCEL_ROWS}"

    yes_no_list = _quoted(yes_no(lang))
    yes_no_prompt = " / ".join(yes_no(lang))
    add("orders", _list_validation(_quoted(statuses(lang)), prompt="Statut"), "status")
    # A list read from another sheet: fine in Excel 2010+ and LibreOffice. Each plan once,
    # from the tool's hidden list, as long as the list is.
    add("orders", _list_validation(PLAN_LIST_SOURCE, prompt="Plan"), "plan")
    add("orders", _list_validation(first_column("customers"), prompt="Client", strict=False),
        "customer_id")
    add("customers", _list_validation(yes_no_list, prompt=yes_no_prompt), "opt_out")
    add("plans", _list_validation(_quoted(units(lang)), prompt="Unité"), "unit")
    add("plans", _list_validation(yes_no_list, prompt=yes_no_prompt), "active", "required")
    # Staff may add other date columns to Orders: suggest, do not refuse.
    dates = [header("orders", c, lang) for c in ORDERS if c.kind == "date"]
    add("plans", _list_validation(_quoted(dates), prompt="Colonne de date", strict=False),
        "from")
    step = DataValidation(type="whole", operator="between", formula1="1", formula2="10",
                          allow_blank=True, showErrorMessage=True, errorTitle="commplan",
                          error="Le numéro d'étape est un nombre entier de 1 à 10.")
    add("plans", step, "step")
    delay = DataValidation(type="decimal", operator="greaterThanOrEqual", formula1="0",
                           allow_blank=True, showErrorMessage=True, errorTitle="commplan",
                           error="Le délai est un nombre positif ou nul (ex. 5 ou 1,5).")
    add("plans", delay, "delay")


# ---------------------------------------------------------------------------
# Mode d'emploi
# ---------------------------------------------------------------------------

# The "Mode d'emploi" sheet, a line per row: "# " starts a title, "- " a list item.
HOW_TO: Mapping[str, tuple[str, ...]] = {
    "fr": (
        "# Mode d'emploi de commplan",
        "commplan envoie chaque matin à vos clients les mails prévus pour leur commande. "
        "Tout se règle dans ce classeur ; la commande « commplan check » le vérifie.",
        "",
        "# À quoi sert chaque feuille",
        "- Commandes : une ligne par commande suivie (n° commande, code client, plan, date de "
        "début, statut). Les colonnes que vous ajoutez (produit, point de vente…) sont "
        "utilisables dans les mails.",
        "- Clients : une ligne par client (code client, nom, email ; plusieurs adresses "
        "séparées par ;). désabonné = oui : le client ne reçoit plus rien.",
        "- Plans : les messages de chaque plan, une ligne par message (10 au plus par plan).",
        "- Variables : vos constantes (téléphone, site…), utilisables dans tous les mails par "
        "leur nom, ex. {{ company_phone }}.",
        "- Paramètres : l'adresse d'expédition, le serveur de mail, la langue (locale) et les "
        "autres réglages, chacun expliqué à sa droite.",
        "- Journal, Tableau de bord, Prévisions, Liste des variables : écrites par commplan à "
        "chaque passage. Ne les modifiez pas : elles sont réécrites.",
        "",
        "# Ajouter un plan",
        "- Dans Plans, une ligne par message, toutes avec le même nom de plan, étapes 1, 2, "
        "3…",
        "- délai et unité : quand part le message, compté depuis la date de début de la "
        "commande (ou depuis la colonne de date nommée dans « depuis »), ex. 5 jours, "
        "2 semaines, 1,5 mois.",
        "- objet et message : le texte du mail. Les variables s'écrivent entre doubles "
        "accolades, ex. {{ client.nom }} ; « commplan variables » les liste toutes.",
        "- obligatoire = oui : le message part même si une étape suivante est déjà due.",
        "",
        "# Ajouter une commande",
        "- Le client doit être dans Clients : ajoutez-le d'abord si besoin.",
        "- Dans Commandes, une ligne : n° commande (unique), code client, plan (dans la "
        "liste), date de début (JJ/MM/AAAA).",
        "- Chaque message part au passage du matin, à sa date. « commplan due » montre ce qui "
        "partira.",
        "",
        "# Les statuts d'une commande",
        "- actif (ou vide) : les messages partent à leur date.",
        "- en pause : rien ne part tant que la commande n'est pas remise à actif.",
        "- annulé : plus rien ne part.",
        "- terminé : plus rien ne part, la commande est close.",
        "",
        "# Lire le Journal",
        "Une ligne par événement, le plus ancien en haut. La colonne statut dit :",
        "- envoyé : le serveur de mail a accepté le mail ; sa copie est dans le dossier "
        "archive (colonne fichier archivé).",
        "- échec : le mail n'est pas parti ; détail dit pourquoi et s'il sera réessayé.",
        "- ignoré : pas envoyé exprès (trop en retard, ou remplacé par une étape suivante).",
        "- incertain : l'envoi a été interrompu. Demandez au client s'il l'a reçu ; sinon "
        "« commplan resend COMMANDE ÉTAPE » le renvoie.",
        "",
        "# Lire le Tableau de bord",
        "Les mails des 30 derniers jours par jour et par plan, les échecs en attente d'un "
        "nouvel essai et les commandes dont le client n'a pas d'adresse valide. Prévisions "
        "liste les mails des 30 prochains jours.",
        "",
        "# Quand « commplan check » signale un problème",
        "Chaque ligne nomme la feuille, la cellule et la colonne, ex. Commandes!D7 "
        "(date_de_debut), et dit quoi faire. Corrigez la cellule, enregistrez le classeur, "
        "relancez « commplan check ». Une ligne en erreur est laissée de côté ; les autres "
        "partent quand même.",
    ),
    "en": (
        "# How to use commplan",
        "Every morning commplan sends your customers the mails planned for their order. "
        "Everything is set in this workbook; the command \"commplan check\" checks it.",
        "",
        "# What each sheet is for",
        "- Orders: one row per order followed (order_id, customer_id, plan, start_date, "
        "status). Columns you add (product, store…) can be used in mails.",
        "- Customers: one row per customer (customer_id, name, email; several addresses "
        "separated by ;). opt_out = yes: the customer gets nothing more.",
        "- Plans: the messages of each plan, one row per message (at most 10 per plan).",
        "- Variables: your constants (phone, website…), usable in every mail by their name, "
        "e.g. {{ company_phone }}.",
        "- Settings: the sender address, the mail server, the language (locale) and the other "
        "settings, each explained on its right.",
        "- SentLog, Dashboard, Forecast, VariableList: written by commplan on each run. Do "
        "not edit them: they are rewritten.",
        "",
        "# Adding a plan",
        "- In Plans, one row per message, all with the same plan name, steps 1, 2, 3…",
        "- delay and unit: when the message goes, counted from the order's start_date (or "
        "from the date column named in \"from\"), e.g. 5 days, 2 weeks, 1.5 months.",
        "- subject and body: the mail's text. Variables go between double braces, e.g. "
        "{{ customer.name }}; \"commplan variables\" lists them all.",
        "- required = yes: the message goes even when a later step is already due.",
        "",
        "# Adding an order",
        "- The customer must be in Customers: add them first if needed.",
        "- In Orders, one row: order_id (unique), customer_id, plan (from the list), "
        "start_date (DD/MM/YYYY).",
        "- Each message goes with the morning run, on its date. \"commplan due\" shows what "
        "will go.",
        "",
        "# An order's status",
        "- active (or empty): the messages go on their dates.",
        "- paused: nothing goes until the order is active again.",
        "- cancelled: nothing more goes.",
        "- done: nothing more goes; the order is closed.",
        "",
        "# Reading the SentLog",
        "One row per event, the oldest at the top. The status column says:",
        "- sent: the mail server took the mail; its copy is in the archive folder "
        "(archive_file column).",
        "- failed: the mail did not go; detail says why and whether it is retried.",
        "- skipped: not sent on purpose (too late, or superseded by a later step).",
        "- uncertain: sending was interrupted. Ask the customer whether it arrived; if not, "
        "\"commplan resend ORDER STEP\" sends it again.",
        "",
        "# Reading the Dashboard",
        "The mails of the last 30 days by day and by plan, the failures waiting for a retry "
        "and the orders whose customer has no valid address. Forecast lists the mails of the "
        "next 30 days.",
        "",
        "# When \"commplan check\" reports a problem",
        "Each line names the sheet, the cell and the column, e.g. Orders!D7 (start_date), "
        "and says what to do. Fix the cell, save the workbook, run \"commplan check\" again. "
        "A row with a problem is left out; the others still go.",
    ),
}
_TITLE_FONT = Font(bold=True, size=14, color="1F3864")
_HEADING_FONT = Font(bold=True, size=12, color="1F3864")


def _write_how_to(ws: Worksheet, lang: str) -> None:
    """The "Mode d'emploi" sheet: one wide wrapped column, readable on screen and printed
    (A4 portrait, one page wide)."""
    ws.column_dimensions["A"].width = 100
    for r, line in enumerate(HOW_TO[lang], start=1):
        if not line:
            continue
        title = line.startswith("# ")
        cell = ws.cell(row=r, column=1, value=line[2:] if title else line)
        cell.alignment = Alignment(vertical="top", wrap_text=True,
                                   indent=1 if line.startswith("- ") else 0)
        if title:
            cell.font = _TITLE_FONT if r == 1 else _HEADING_FONT
    ws.sheet_view.showGridLines = False
    ws.page_setup.orientation = "portrait"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.print_options.gridLines = False


def _save_atomically(wb: Workbook, path: Path) -> None:
    """Save to a temporary file beside `path`, then replace: never a half-written workbook."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Not mkstemp: its 0600 mode would stick to the workbook; wb.save honours the umask.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        wb.save(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------------------
# Attachments: small, real one-page PDFs built by hand (no PDF library needed)
# ---------------------------------------------------------------------------

DEMO_ATTACHMENTS: dict[str, tuple[str, ...]] = {
    CGV_PDF: (
        "Menuiseries Dupont - Conditions générales de vente",
        "",
        "Document de démonstration créé par commplan init.",
        "Remplacez ce fichier par vos vraies conditions générales de vente,",
        "sous le même nom, dans le dossier attachments.",
    ),
    GUIDE_PDF: (
        "Menuiseries Dupont - Guide d'entretien de vos menuiseries",
        "",
        "Document de démonstration créé par commplan init.",
        "Nettoyez les vitrages à l'eau savonneuse, sans produit abrasif.",
        "Graissez les paumelles et dégagez les rails une fois par an.",
    ),
}


def minimal_pdf(lines: Sequence[str]) -> bytes:
    """A valid one-page A4 PDF showing `lines` in Helvetica (Latin-1 text)."""

    def text(s: str) -> bytes:
        raw = s.encode("cp1252", errors="replace")  # WinAnsiEncoding ≈ cp1252
        return raw.replace(b"\\", b"\\\\").replace(b"(", b"\\(").replace(b")", b"\\)")

    content = b"BT /F1 14 Tf 56 780 Td 18 TL\n"
    for i, line in enumerate(lines):
        if i == 1:
            content += b"/F1 11 Tf\n"
        content += b"(" + text(line) + b") Tj T*\n"
    content += b"ET\n"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] "
        b"/Resources << /Font << /F1 4 0 R >> >> /Contents 5 0 R >>",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica "
        b"/Encoding /WinAnsiEncoding >>",
        b"<< /Length %d >>\nstream\n" % len(content) + content + b"endstream",
    ]
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    for offset in offsets:
        out += b"%010d 00000 n \n" % offset
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (
        len(objects) + 1, xref)
    return bytes(out)


# ---------------------------------------------------------------------------
# init
# ---------------------------------------------------------------------------


def default_today() -> dt.date:
    """Today in Paris (the default timezone); the local date if zone data is missing."""
    try:
        from zoneinfo import ZoneInfo

        return dt.datetime.now(ZoneInfo("Europe/Paris")).date()
    except Exception:  # no tz database (bare Windows without tzdata)
        return dt.date.today()


def backup_path(workbook: Path, now: dt.datetime) -> Path:
    """A free dated name beside `workbook`: commplan.backup-2026-11-27-063000.xlsx."""
    stamp = now.strftime("%Y-%m-%d-%H%M%S")
    candidate = workbook.with_name(f"{workbook.stem}.backup-{stamp}{workbook.suffix}")
    n = 2
    while candidate.exists():
        candidate = workbook.with_name(f"{workbook.stem}.backup-{stamp}-{n}{workbook.suffix}")
        n += 1
    return candidate


def write_demo_attachments(folder: Path) -> list[Path]:
    """Write the demo PDFs that are missing; never replace a file staff put there."""
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, lines in DEMO_ATTACHMENTS.items():
        target = folder / name
        if not target.exists():
            target.write_bytes(minimal_pdf(lines))
            written.append(target)
    return written


def init_home(home: Path, *, force: bool = False, today: dt.date | None = None,
              workbook: Path | None = None, lang: str = "fr",
              demo_domain: str | None = None) -> Path:
    """Create the home folders, demo attachments and workbook (in `lang`, "fr" or "en";
    the demo customers' addresses at `demo_domain` when given); return the workbook path.

    Refuses to replace an existing workbook unless `force`; then the old one is kept as a
    dated backup beside it. `workbook` overrides home/workbooks/commplan.xlsx.
    """
    home = Path(home)
    path = Path(workbook) if workbook is not None else home / "workbooks" / WORKBOOK_NAME
    if path.exists():
        if not force:
            raise CommplanError(_(
                "The workbook {path} already exists; use --force to replace it (the old one "
                "is kept as a dated backup).").format(path=path))
        if lock_file(path) is not None:
            raise WorkbookLocked(_(
                "The workbook {path} is open in Excel or LibreOffice; close it and try again."
            ).format(path=path))
    for folder in ("workbooks", "attachments", "archive"):
        (home / folder).mkdir(parents=True, exist_ok=True)
    write_demo_attachments(home / "attachments")
    if path.exists():
        # Copy, then replace atomically: a workbook stays at `path` at every moment.
        shutil.copy2(path, backup_path(path, dt.datetime.now()))
    create_workbook(path, demo=True, today=today or default_today(), lang=lang,
                    demo_domain=demo_domain)
    return path
