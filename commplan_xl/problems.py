"""The small exception hierarchy, and workbook problems as data with their sentences."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum

from commplan_xl.core.units import UNIT_TABLE, english_hint
from commplan_xl.i18n import N_, _, current, quoted


class CommplanError(Exception):
    """An error that ends a command with a plain sentence (exit 1)."""


class WorkbookLocked(CommplanError):
    """The workbook is open in Excel or LibreOffice, so the tool must not write it."""


class RunLocked(CommplanError):
    """Another run holds the home folder."""


class Problem(Enum):
    """The kinds of workbook problem; `SENTENCES` says each one to staff."""

    TEXT = "text"  # a sentence made elsewhere (Settings values, template rendering)
    # Sheets and columns
    NO_SHEET = "no_sheet"
    REPEATED_COLUMN = "repeated_column"
    SAME_MEANING_COLUMNS = "same_meaning_columns"
    SAME_MEANING_SHEETS = "same_meaning_sheets"
    MISSING_COLUMN = "missing_column"
    # Cells of any sheet
    NOT_YES_NO = "not_yes_no"
    DATE_TEXT_NOT_A_DATE = "date_text_not_a_date"
    NOT_A_DATE = "not_a_date"
    DATE_NO_SUCH_DAY = "date_no_such_day"
    STEP_EMPTY = "step_empty"
    STEP_NOT_A_NUMBER = "step_not_a_number"
    # Variables
    VARIABLE_NO_NAME = "variable_no_name"
    VARIABLE_BAD_NAME = "variable_bad_name"
    VARIABLE_BUILT_IN = "variable_built_in"
    VARIABLE_REPEATED = "variable_repeated"
    # Plans
    PLAN_NAME_EMPTY = "plan_name_empty"
    STEP_REPEATED = "step_repeated"
    UNIT_EMPTY = "unit_empty"
    UNIT_UNKNOWN = "unit_unknown"
    DELAY_EMPTY = "delay_empty"
    DELAY_NOT_A_NUMBER = "delay_not_a_number"
    DELAY_NEGATIVE = "delay_negative"
    DELAY_NOT_WHOLE = "delay_not_whole"
    FROM_UNKNOWN = "from_unknown"
    SUBJECT_EMPTY = "subject_empty"
    BODY_EMPTY = "body_empty"
    TEMPLATE_ERROR = "template_error"
    ATTACHMENT_REFUSED = "attachment_refused"
    ATTACHMENT_MISSING = "attachment_missing"
    # Customers
    CUSTOMER_ID_EMPTY = "customer_id_empty"
    CUSTOMER_ID_REPEATED = "customer_id_repeated"
    EMAIL_EMPTY = "email_empty"
    EMAIL_INVALID = "email_invalid"
    EMAIL_EXAMPLE = "email_example"
    # Orders
    ORDER_ID_EMPTY = "order_id_empty"
    ORDER_ID_REPEATED = "order_id_repeated"
    ORDER_CUSTOMER_EMPTY = "order_customer_empty"
    ORDER_CUSTOMER_HAS_PROBLEM = "order_customer_has_problem"
    ORDER_CUSTOMER_UNKNOWN = "order_customer_unknown"
    ORDER_PLAN_EMPTY = "order_plan_empty"
    ORDER_PLAN_HAS_PROBLEMS = "order_plan_has_problems"
    ORDER_PLAN_UNKNOWN = "order_plan_unknown"
    ORDER_PLAN_UNKNOWN_NO_PLANS = "order_plan_unknown_no_plans"
    START_DATE_EMPTY = "start_date_empty"
    STATUS_UNKNOWN = "status_unknown"
    HOLD_STEPS_INVALID = "hold_steps_invalid"
    # Settings
    LOCALE_NOT_SPOKEN = "locale_not_spoken"


# One sentence per kind (English, said in the workbook's language by `sentence`), filled
# from the problem's values (str.format); {units} is the list of units to write.
SENTENCES: dict[Problem, str] = {
    Problem.TEXT: "{text}",
    Problem.NO_SHEET: N_("The workbook has no sheet {sheet}; add it with the columns {columns} "
                         "in row 1."),
    Problem.REPEATED_COLUMN: N_("Column {letter} repeats the column {column} (already column "
                                "{first_letter}); rename or remove one of them."),
    Problem.SAME_MEANING_COLUMNS: N_('Columns {first_letter} ("{first}") and {letter} ("{other}") '
                                     "mean the same; keep only one (column {letter} is "
                                     "ignored)."),
    Problem.SAME_MEANING_SHEETS: N_('The sheets "{first}" and "{other}" mean the same; keep '
                                    'only one (the sheet "{other}" is ignored).'),
    Problem.MISSING_COLUMN: N_("The column {name} is missing; add it to row 1."),
    Problem.NOT_YES_NO: N_('"{text}" is not yes or no (write yes, no, or x).'),
    Problem.DATE_TEXT_NOT_A_DATE: N_('"{text}" is not a date; write it day first, e.g. '
                                     "05/03/2026."),
    Problem.NOT_A_DATE: N_('"{text}" is not a date.'),
    Problem.DATE_NO_SUCH_DAY: N_('"{text}" is not a date (there is no such day).'),
    Problem.STEP_EMPTY: N_("The step is empty; write a whole number from 1 to 10."),
    Problem.STEP_NOT_A_NUMBER: N_('"{text}" is not a step number; write a whole number from 1 '
                                  "to 10."),
    Problem.VARIABLE_NO_NAME: N_("The variable has no name; write one (e.g. company_phone) or "
                                 "clear the row."),
    Problem.VARIABLE_BAD_NAME: N_('"{name}" cannot be a variable name; use letters, digits and '
                                  "_, starting with a letter (e.g. company_phone)."),
    Problem.VARIABLE_BUILT_IN: N_('"{name}" is a built-in name ({built_in}); choose another '
                                  "name."),
    Problem.VARIABLE_REPEATED: N_("The variable {name} is already in row {first_row}; keep only "
                                  "one."),
    Problem.PLAN_NAME_EMPTY: N_("The plan name is empty; write the plan this step belongs to."),
    Problem.STEP_REPEATED: N_('Step {step} of plan "{plan}" is already in row {first_row}; give '
                              "each step its own number."),
    Problem.UNIT_EMPTY: N_("The unit is empty; write {units}."),
    Problem.UNIT_UNKNOWN: N_('"{text}" is not a unit; write {units}.'),
    Problem.DELAY_EMPTY: N_("The delay is empty; write how many units after the start date "
                            "(e.g. 5)."),
    Problem.DELAY_NOT_A_NUMBER: N_('"{text}" is not a number; write how many units after the '
                                   "start date (e.g. 5)."),
    Problem.DELAY_NEGATIVE: N_('The delay "{text}" is negative; write 0 or more.'),
    Problem.DELAY_NOT_WHOLE: N_('The delay "{text}" is not a whole number; a delay in days '
                                "must be whole (or use weeks or months)."),
    Problem.FROM_UNKNOWN: N_('Orders has no column "{text}"; write the name of a date column of '
                             "Orders (e.g. start_date)."),
    Problem.SUBJECT_EMPTY: N_("The subject is empty; write the subject of this mail."),
    Problem.BODY_EMPTY: N_("The body is empty; write the text of this mail."),
    Problem.TEMPLATE_ERROR: N_("The {part} template has an error on line {line}: {error}."),
    Problem.ATTACHMENT_REFUSED: "{reason}",
    Problem.ATTACHMENT_MISSING: N_('The attachment "{name}" is not in the attachments folder '
                                   "{folder}; add the file or fix its name."),
    Problem.CUSTOMER_ID_EMPTY: N_("The customer id is empty; write one."),
    Problem.CUSTOMER_ID_REPEATED: N_('The customer id "{id}" is already used in row '
                                     "{first_row}; give each customer its own id."),
    Problem.EMAIL_EMPTY: N_("The email is empty; write the customer's address."),
    Problem.EMAIL_INVALID: N_('"{address}" is not an email address; fix it (several addresses '
                              "are separated by ;)."),
    Problem.EMAIL_EXAMPLE: N_('"{address}" is an example address (a documentation domain): it '
                              "is never sent to; write the customer's real address."),
    Problem.ORDER_ID_EMPTY: N_("The order id is empty; write one."),
    Problem.ORDER_ID_REPEATED: N_('The order id "{id}" is already used in row {first_row} '
                                  "(order ids ignore case and spaces); give each order its own "
                                  "id."),
    Problem.ORDER_CUSTOMER_EMPTY: N_("The customer id is empty; write the customer's id from "
                                     "Customers."),
    Problem.ORDER_CUSTOMER_HAS_PROBLEM: N_('The customer "{customer_id}" has a problem in '
                                           "Customers row {customer_row}; fix that row first."),
    Problem.ORDER_CUSTOMER_UNKNOWN: N_('There is no customer "{customer_id}" in Customers; add '
                                       "the customer or fix the id."),
    Problem.ORDER_PLAN_EMPTY: N_("The plan is empty; write the name of a plan from Plans."),
    Problem.ORDER_PLAN_HAS_PROBLEMS: N_('The plan "{plan}" has problems in Plans (row '
                                        "{plan_row}); fix them first."),
    Problem.ORDER_PLAN_UNKNOWN: N_('There is no plan "{plan}" in Plans; write one of {known}.'),
    Problem.ORDER_PLAN_UNKNOWN_NO_PLANS: N_('There is no plan "{plan}" in Plans; add the plan '
                                            "to Plans or fix the name."),
    Problem.START_DATE_EMPTY: N_("The start date is empty; write the date the order starts "
                                 "(e.g. 05/03/2026)."),
    Problem.STATUS_UNKNOWN: N_('"{text}" is not a status; write active, paused, cancelled or '
                               "done (empty means active)."),
    Problem.HOLD_STEPS_INVALID: N_('"{text}" is not a list of steps; write step numbers from 1 '
                                   "to 10 separated by ; (e.g. 3;4)."),
    Problem.LOCALE_NOT_SPOKEN: N_('locale: commplan speaks French (fr_…) and English (en_…), '
                                  'not "{locale}", so it uses French (fr_FR); write fr_FR or '
                                  "en_GB."),
}


_PARTS = {"subject": N_("subject"), "body": N_("body")}


def units_hint() -> str:
    """The units to write, in the current language first: "days, …, weeks or months (or
    jours, …, mois)"."""
    if current() == "en":
        return english_hint()
    french = [row.french for row in UNIT_TABLE]
    english = ", ".join(row.english for row in UNIT_TABLE)
    return f"{', '.join(french[:-1])} ou {french[-1]} (ou {english})"


def sentence(kind: Problem, values: Mapping[str, object]) -> str:
    """The sentence of a problem of `kind` with `values`, in the current language."""
    text = SENTENCES[kind]
    if kind in (Problem.UNIT_EMPTY, Problem.UNIT_UNKNOWN):
        values = {"units": units_hint(), **values}
    elif kind is Problem.TEMPLATE_ERROR and values.get("part") in _PARTS:
        values = {**values, "part": _(_PARTS[str(values["part"])])}
    elif kind is Problem.ORDER_PLAN_UNKNOWN:  # `known`: the plans' names
        values = {**values, "known": quoted(values["known"], at_most=5)}  # type: ignore[arg-type]
    return _(text).format_map(values)


@dataclass(frozen=True, init=False)
class WorkbookProblem:
    """One problem in the workbook: its kind, its place as Excel shows it, and the values
    its sentence names.

    `row` is Excel's row number (header = 1) or None for a whole sheet; `column` is the
    column's key (its English name, "start_date") or None; `header` the column as the sheet
    names it ("date_de_debut") when that differs. Built from a sentence instead of a kind,
    it is of kind `Problem.TEXT`.
    """

    sheet: str
    row: int | None
    column: str | None
    kind: Problem
    values: Mapping[str, object]
    cell: str | None  # e.g. "D7" when the column letter is known
    # A problem of one message rather than of the row (a missing attachment file, a template
    # that cannot render for one order): reported, but the step stays scheduled and its
    # message is recorded `failed` (temporary) until fixed.
    message_level: bool
    header: str | None

    def __init__(
        self, sheet: str, row: int | None, column: str | None, kind: Problem | str,
        values: Mapping[str, object] | None = None, *, cell: str | None = None,
        message_level: bool = False, header: str | None = None,
    ) -> None:
        if isinstance(kind, str):
            kind, values = Problem.TEXT, {"text": kind}
        for name, value in (("sheet", sheet), ("row", row), ("column", column), ("kind", kind),
                            ("values", dict(values or {})), ("cell", cell),
                            ("message_level", message_level), ("header", header)):
            object.__setattr__(self, name, value)

    __hash__ = None  # type: ignore[assignment]  # `values` is a dict

    @property
    def message(self) -> str:
        """The sentence, without its place."""
        return sentence(self.kind, self.values)

    @property
    def place(self) -> str:
        """Where it is, as staff find it: "Orders!D7 (start_date)", "Settings"…"""
        place = self.sheet
        if self.cell:
            place += f"!{self.cell}"
        elif self.row is not None:
            place = (f"{place}!{self.row}" if self.column is None
                     else _("{sheet} row {row}").format(sheet=place, row=self.row))
        if self.header or self.column:
            place += f" ({self.header or self.column})"
        return place

    def __str__(self) -> str:
        return _("{place}: {message}").format(place=self.place, message=self.message)


class CellError(ValueError):
    """A cell that does not read as its column needs; `kind` and `values` say why (the
    exception's text is the sentence, without its final full stop)."""

    def __init__(self, kind: Problem, **values: object) -> None:
        self.kind = kind
        self.values = values
        super().__init__(sentence(kind, values).removesuffix("."))


class SendKind(Enum):
    """Why a mail was not sent, as the run and its advice tell them apart."""

    TEMPORARY = "temporary"  # the server refused it for now (4xx): a later run retries
    PERMANENT = "permanent"  # refused for good (5xx, an invalid address): not retried
    UNCERTAIN = "uncertain"  # the line failed while the server took it: maybe sent
    THROTTLED = "throttled"  # the server asks to slow down (any code): waited for, retried
    CONTENT = "content refused"  # refused after the data: the content or a policy (5xx)
    RECIPIENT_REFUSED = "recipient refused"  # sent to the others; one address refused for good
    UNREACHABLE = "unreachable"  # no connection, or it dropped before the server took it
    LOGIN_REFUSED = "login refused"  # the server or the sign-in refused the credentials
    SETUP = "setup"  # the site's settings: no password, sender refused, TLS or AUTH missing
    NOT_BUILT = "not built"  # the mail could not be made (template, attachment, address)
    # Found later in the mailbox (returned mails):
    SENDER_SIDE = "sender side"  # came back refused for the sending account, not the address
    TO_REVIEW = "to review"  # a returned mail that names a customer, but no mail of ours

    @property
    def temporary(self) -> bool:
        """Whether a later run tries the mail again by itself."""
        return self not in (SendKind.PERMANENT, SendKind.UNCERTAIN, SendKind.TO_REVIEW,
                            SendKind.CONTENT, SendKind.RECIPIENT_REFUSED)

    @property
    def connection(self) -> bool:
        """Whether the connection itself failed: the run stops trying after a few in a row."""
        return self in (SendKind.UNCERTAIN, SendKind.UNREACHABLE, SendKind.LOGIN_REFUSED,
                        SendKind.SETUP)


def _kind_of(temporary: bool | None, connection: bool) -> SendKind:
    if connection:
        return SendKind.UNREACHABLE if temporary or temporary is None else SendKind.UNCERTAIN
    return SendKind.TEMPORARY if temporary else SendKind.PERMANENT


class SendFailure(CommplanError):
    """A message could not be sent: its kind, and what the server said when it answered
    (`code`, `reply`) about which `recipient`. `str()` is the sentence for people.

    `temporary`/`connection` may stand for the kind (older callers): temporary and
    connection make UNREACHABLE, temporary alone TEMPORARY, neither PERMANENT.
    """

    def __init__(self, message: str, *, kind: SendKind | None = None,
                 temporary: bool | None = None, connection: bool = False,
                 code: int | None = None, reply: str = "", recipient: str = "") -> None:
        super().__init__(message)
        self.kind = kind if kind is not None else _kind_of(temporary, connection)
        self.code = code
        self.reply = reply
        self.recipient = recipient

    @property
    def temporary(self) -> bool:
        """Retried by later runs."""
        return self.kind.temporary

    @property
    def connection(self) -> bool:
        """The connection itself failed (server down, dropped, login refused)."""
        return self.kind.connection


class SendUncertain(SendFailure):
    """The connection failed while the message was being handed over: the server may have
    it. The ledger records `uncertain` and never sends it again automatically."""

    def __init__(self, message: str, **kw: object) -> None:
        kw.pop("temporary", None)
        kw.pop("connection", None)
        kw["kind"] = SendKind.UNCERTAIN
        super().__init__(message, **kw)  # type: ignore[arg-type]
