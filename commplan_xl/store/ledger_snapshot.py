"""A read-only snapshot of every message the ledger knows, packed for the schedule.

A long-lived ledger is mostly done messages (sent, skipped, uncertain, sending), and the
schedule only asks whether they are done: they are kept as bits per order rather than one
entry each. A message is (order key, step): the order id folded as plan names are
(`schedule.message_key`), whatever plan the order is on.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from commplan_xl.model import LedgerEntry

# Done states as two bits per step (the order of the CASE in `Ledger.state`).
PACKED_STATES = ("sent", "skipped", "uncertain", "sending")
MAX_PACKED_STEP = 30  # 2 bits x 31 steps fit a 64-bit SQLite integer


class LedgerSnapshot(Mapping):
    """A read-only view of the ledger's messages, by (order key, step).

    Done messages are kept packed per order key: `done_steps` has bit n set when step n is
    done (their history is in the events table). `done_steps` and `open` (the other
    messages, as LedgerEntry) are public, read-only by convention: the schedule reads them
    directly. `plans` (filled by the callers that need it) maps an order key to the plan
    (key, name) of its latest recorded message.
    """

    def __init__(self, done_steps: dict[str, int], done_codes: dict[str, int],
                 open_entries: dict[tuple[str, int], LedgerEntry]) -> None:
        self.done_steps = done_steps
        self.open = open_entries
        self._codes = done_codes
        self.plans: dict[str, tuple[str, str]] = {}

    @classmethod
    def of(cls, entries: Mapping[tuple[str, int], LedgerEntry]) -> LedgerSnapshot:
        """The state holding `entries`, packed as `Ledger.state` packs the file's rows."""
        steps: dict[str, int] = {}
        codes: dict[str, int] = {}
        open_entries: dict[tuple[str, int], LedgerEntry] = {}
        for (order_key, step), entry in entries.items():
            if entry.state in PACKED_STATES and 0 <= step <= MAX_PACKED_STEP:
                steps[order_key] = steps.get(order_key, 0) | 1 << step
                code = PACKED_STATES.index(entry.state) << (2 * step)
                codes[order_key] = codes.get(order_key, 0) | code
            else:
                open_entries[order_key, step] = entry
        return cls(steps, codes, open_entries)

    def _done_state(self, key: object) -> str | None:
        try:
            order_key, step = key  # type: ignore[misc]
            mask = self.done_steps.get(order_key, 0)
        except (TypeError, ValueError):
            return None
        if type(step) is not int or not 0 <= step <= MAX_PACKED_STEP or not mask >> step & 1:
            return None
        return PACKED_STATES[self._codes[order_key] >> (2 * step) & 3]

    def __getitem__(self, key: tuple[str, int]) -> LedgerEntry:
        entry = self.open.get(key)
        if entry is not None:
            return entry
        state = self._done_state(key)
        if state is None:
            raise KeyError(key)
        return LedgerEntry(order_id=key[0], plan="", step=key[1],
                           state=state)  # type: ignore[arg-type]

    def values(self):  # type: ignore[override]
        """Every entry; done messages as bare (key, state) entries, built cheaply."""
        yield from self.open.values()
        for key in self._done_keys():
            yield _DoneEntry(key, self._done_state(key))  # type: ignore[arg-type]

    def get(self, key, default=None):
        entry = self.open.get(key)
        if entry is not None:
            return entry
        state = self._done_state(key)
        if state is None:
            return default
        # Only `.state` of a done message is ever read: a bare entry is enough.
        return _DoneEntry(key, state)

    def __contains__(self, key: object) -> bool:
        return key in self.open or self._done_state(key) is not None

    def _done_keys(self) -> Iterator[tuple[str, int]]:
        for order_key, mask in self.done_steps.items():
            for step in range(mask.bit_length()):
                if mask >> step & 1:
                    yield order_key, step

    def __iter__(self):
        yield from self.open
        yield from self._done_keys()

    def __len__(self) -> int:
        return len(self.open) + sum(mask.bit_count() for mask in self.done_steps.values())


class _DoneEntry:
    """The state of a done message, as `LedgerSnapshot.get` returns it (read-only)."""

    __slots__ = ("order_id", "step", "state")

    def __init__(self, key: tuple[str, int], state: str) -> None:
        self.order_id, self.step = key
        self.state = state

    plan = ""
    emails = ""
    detail = ""
    due_date = None
    updated = None
    attempts = 0
    first_waiting = None
