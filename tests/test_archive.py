"""The archive: safe names, one folder per customer, files never overwritten."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from commplan_xl.problems import CommplanError
from commplan_xl.store.archive import (
    ArchiveIndex,
    customer_folder,
    relative,
    safe_name,
    write_message,
)

WINDOWS_FORBIDDEN = set('<>:"/\\|?*')


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Éloïse Lefèvre", "Éloïse Lefèvre"),  # accents kept
        ("E\u0301loi\u0308se", "Éloïse"),  # decomposed accents become NFC
        ("a<b>c", "a_b_c"),
        ('q:"x"/y\\z|w?*', "q__x__y_z_w__"),
        ("CON", "CON_"),
        ("con", "con_"),
        ("con.txt", "con_.txt"),
        ("Lpt9.tar.gz", "Lpt9_.tar.gz"),
        ("COM1", "COM1_"),
        ("NUL ", "NUL_"),
        ("CONSOLE", "CONSOLE"),  # only the exact device names are reserved
        ("COM0", "COM0"),
        ("report...", "report"),  # trailing dots
        ("name. . ", "name"),
        ("  leading", "leading"),
        ("..", "_"),
        (".", "_"),
        ("", "_"),
        ("   ", "_"),
        ("line\nbreak\r\nhere", "line_break__here"),
        ("tab\there\x00nul\x7f", "tab_here_nul_"),
        ("para\u2028sep", "para_sep"),
    ],
)
def test_safe_name_table(text: str, expected: str) -> None:
    """safe_name turns any text into a name Windows and Unix accept, keeping what it can."""
    assert safe_name(text) == expected


def test_safe_name_bounds_length_on_a_character_boundary() -> None:
    """A long name is cut to max_len characters, never between a letter and its accent."""
    assert safe_name("é" * 200) == "é" * 60
    assert len(safe_name("x" * 500, max_len=100)) == 100
    # U+0301 cannot be composed with "q": the cut must not leave a bare "q" without it.
    cut = safe_name("a" * 9 + "q\u0301" + "zzz", max_len=10)
    assert cut == "a" * 9
    assert safe_name("ab" + " " * 80 + "cd", max_len=10) == "ab"  # no trailing space


@pytest.mark.parametrize("text", ["..", "CON", "a" * 300, "x/../../y", "\x00\x01", "con.txt"])
def test_safe_name_invariants(text: str) -> None:
    """The result is never empty, `.` or `..`, has no forbidden character, fits max_len."""
    name = safe_name(text, max_len=20)
    assert name not in ("", ".", "..")
    assert not WINDOWS_FORBIDDEN & set(name)
    assert len(name) <= 20
    assert not name.endswith((".", " "))
    assert name.split(".")[0].upper() not in {"CON", "PRN", "AUX", "NUL"}


def test_customer_folder_named_from_id_and_name(tmp_path: Path) -> None:
    """One folder per customer, `<id> - <name>`, created inside the archive folder."""
    folder = customer_folder(tmp_path, "C0001", "Éloïse Lefèvre")
    assert folder == tmp_path / "C0001 - Éloïse Lefèvre"
    assert folder.is_dir()


def test_customer_folder_without_name_is_the_id(tmp_path: Path) -> None:
    """A customer with no name gets a folder named by the id alone."""
    assert customer_folder(tmp_path, "C7", "  ").name == "C7"


@pytest.mark.parametrize(
    "customer_id", ["../../etc", "..", "C:\\x", "/etc/passwd", "a/../../b", "\\\\server\\s", "."]
)
def test_customer_folder_never_escapes_the_archive(tmp_path: Path, customer_id: str) -> None:
    """Whatever the id, the folder is a direct child of archive_dir."""
    archive = tmp_path / "archive"
    folder = customer_folder(archive, customer_id, "../../Name")
    assert folder.parent == archive
    assert folder.resolve().is_relative_to(archive.resolve())
    assert folder.is_dir()


def test_customer_folder_stays_when_the_name_changes(tmp_path: Path) -> None:
    """A renamed customer keeps writing into the folder first made for its id."""
    first = customer_folder(tmp_path, "C0001", "Éloïse Lefèvre")
    assert customer_folder(tmp_path, "C0001", "Éloïse Martin") == first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["C0001 - Éloïse Lefèvre"]


def test_customer_folder_prefix_does_not_match_another_id(tmp_path: Path) -> None:
    """Customer C1's folder is not confused with the folder of customer `C1 - X` or C10."""
    other = customer_folder(tmp_path, "C1 - X", "Anne")
    ten = customer_folder(tmp_path, "C10", "Paul")
    mine = customer_folder(tmp_path, "C1", "Marc")
    assert mine.name == "C1 - Marc"
    assert len({other, ten, mine}) == 3


def test_customer_folder_with_glob_characters(tmp_path: Path) -> None:
    """Ids with glob characters like `[` are matched literally."""
    first = customer_folder(tmp_path, "C[1]", "Old")
    assert customer_folder(tmp_path, "C[1]", "New") == first


def test_write_message_writes_the_exact_bytes(tmp_path: Path) -> None:
    """write_message stores the bytes as `<stem>.eml`, leaving no temporary file behind."""
    data = b"From: a@x\r\nSubject: hi\r\n\r\nbody\r\n"
    path = write_message(tmp_path, stem="2026-11-27_CMD-2026-0001_step-3", data=data)
    assert path == tmp_path / "2026-11-27_CMD-2026-0001_step-3.eml"
    assert path.read_bytes() == data
    assert os.listdir(tmp_path) == [path.name]


def test_write_message_never_overwrites(tmp_path: Path) -> None:
    """A second mail with the same stem gets `-2`, then `-3`; the first is untouched."""
    paths = [write_message(tmp_path, stem="s", data=bytes([i])) for i in range(3)]
    assert [p.name for p in paths] == ["s.eml", "s-2.eml", "s-3.eml"]
    assert [p.read_bytes() for p in paths] == [b"\x00", b"\x01", b"\x02"]
    assert sorted(os.listdir(tmp_path)) == ["s-2.eml", "s-3.eml", "s.eml"]


def test_write_message_makes_the_stem_safe(tmp_path: Path) -> None:
    """An order id with slashes or colons cannot make a path outside the folder."""
    path = write_message(tmp_path, stem="2026-11-27_../../CMD:1_step-1", data=b"x")
    assert path.parent == tmp_path
    assert path.name == "2026-11-27_.._.._CMD_1_step-1.eml"


def test_relative_uses_forward_slashes(tmp_path: Path) -> None:
    """SentLog shows the archive file relative to home, with `/` on every system."""
    folder = customer_folder(tmp_path / "archive", "C0001", "Éloïse Lefèvre")
    path = write_message(folder, stem="m", data=b"x")
    assert relative(path, tmp_path) == "archive/C0001 - Éloïse Lefèvre/m.eml"


def test_relative_outside_home_is_absolute(tmp_path: Path) -> None:
    """An archive configured outside home is shown by its absolute path."""
    home, elsewhere = tmp_path / "home", tmp_path / "other"
    home.mkdir()
    elsewhere.mkdir()
    path = write_message(elsewhere, stem="m", data=b"x")
    assert relative(path, home) == path.resolve().as_posix()


# ---------------------------------------------------------------- the run's index


def test_index_finds_folders_made_before_the_run(tmp_path: Path) -> None:
    """With a run's index, a customer's existing folder is reused, even after a rename."""
    first = customer_folder(tmp_path, "C0001", "Éloïse Lefèvre")
    other = customer_folder(tmp_path, "C1 - X", "Anne")
    index = ArchiveIndex(tmp_path)
    assert customer_folder(tmp_path, "C0001", "Éloïse Martin", index=index) == first
    assert customer_folder(tmp_path, "C1 - X", "Anne", index=index) == other
    assert customer_folder(tmp_path, "C1", "Marc", index=index).name == "C1 - Marc"
    # "C1 - X" is not a safe name as it is: its folder carries a hash of the exact id.
    assert other.name.startswith("C1 _ X ~") and other.name.endswith(" - Anne")
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "C0001 - Éloïse Lefèvre", "C1 - Marc", other.name]


def test_index_learns_the_folders_it_creates(tmp_path: Path) -> None:
    """A folder made during the run is found again for the same id, under its first name."""
    archive = tmp_path / "archive"  # not there yet: made with the first folder
    index = ArchiveIndex(archive)
    first = customer_folder(archive, "C7", "Zoé", index=index)
    assert first.is_dir() and first.parent == archive
    assert customer_folder(archive, "C7", "Zoé Roux", index=index) == first
    assert customer_folder(archive, "C70", "Inès", index=index) != first
    assert customer_folder(archive, "C7", "Zoé Roux") == first  # agrees with a fresh listing


def test_index_prefers_the_folder_of_the_current_name(tmp_path: Path) -> None:
    """When an id has two folders, the one matching the current name wins, else the first
    in order, as without an index."""
    for name in ("C2 - B", "C2 - A"):
        (tmp_path / name).mkdir()
    index = ArchiveIndex(tmp_path)
    assert customer_folder(tmp_path, "C2", "B", index=index).name == "C2 - B"
    assert customer_folder(tmp_path, "C2", "Other", index=index).name == "C2 - A"
    assert customer_folder(tmp_path, "C2", "Other").name == "C2 - A"


def test_index_refuses_a_folder_linking_outside(tmp_path: Path) -> None:
    """An existing customer folder that is a symlink out of the archive is refused."""
    archive, outside = tmp_path / "archive", tmp_path / "outside"
    archive.mkdir()
    outside.mkdir()
    (archive / "C9 - Eve").symlink_to(outside, target_is_directory=True)
    with pytest.raises(CommplanError, match="outside"):
        customer_folder(archive, "C9", "Eve", index=ArchiveIndex(archive))


def test_relative_with_index_matches_without(tmp_path: Path) -> None:
    """The SentLog path is the same whether folders are resolved once or every time."""
    index = ArchiveIndex(tmp_path / "archive")
    folder = customer_folder(tmp_path / "archive", "C0001", "Éloïse", index=index)
    path = write_message(folder, stem="m", data=b"x")
    assert relative(path, tmp_path, index=index) == relative(path, tmp_path)
    assert relative(path, tmp_path, index=index) == "archive/C0001 - Éloïse/m.eml"


# ---------------------------------------------------------------- one folder per customer


@pytest.mark.parametrize(("first", "second"), [
    ("12/34", "12_34"),
    ("12:34", "12?34"),
    ("A" * 40 + "-1", "A" * 40 + "-2"),  # the same first 40 characters
    ("CON", "CON_"),  # a Windows device name and its safe form
    ("C1.", "C1"),  # trailing dot, dropped by Windows
    ("C1 ", "C1"),
    ("C1 - X", "C1 _ X"),
    ("ab", "AB"),  # Windows folder names ignore case
])
def test_two_customers_never_share_a_folder(tmp_path: Path, first: str, second: str) -> None:
    """Ids that make the same safe name get different folders, in either order, with or
    without a run's index, and each finds its own folder again."""
    for order in ((first, second), (second, first)):
        archive = tmp_path / f"archive-{order[0] == first}"
        index = ArchiveIndex(archive)
        a = customer_folder(archive, order[0], "Dupont", index=index)
        b = customer_folder(archive, order[1], "Dupont")  # a fresh listing
        assert a.name.casefold() != b.name.casefold()
        assert customer_folder(archive, order[0], "Dupont") == a
        assert customer_folder(archive, order[1], "Dupont", index=ArchiveIndex(archive)) == b
        assert a.name[:2] == order[0][:2] and a.name.endswith(" - Dupont")  # readable


@pytest.mark.parametrize("customer_id", [
    "C\u202eexe.txt", "C\u2066x\u2069", "C\u200fA", "C\u200dA", "C\x1b[31m", "C\u061cA",
])
def test_no_bidi_or_control_character_in_a_folder_name(tmp_path: Path,
                                                       customer_id: str) -> None:
    """Bidi overrides and isolates, zero-width and control characters never reach a
    folder name, from the id or the name."""
    import unicodedata

    folder = customer_folder(tmp_path, customer_id, "Du\u202epont\u2067")
    assert not any(unicodedata.category(c) in ("Cf", "Cc") for c in folder.name)
    assert folder.parent == tmp_path


def test_an_earlier_folder_stays_with_the_customer_the_ledger_names(tmp_path: Path) -> None:
    """A folder an earlier version named without the hash stays with the customer whose
    mails the ledger says it holds; the other customer gets its own."""
    (tmp_path / "12_34 - Dupont").mkdir()
    owners = {"12_34 - Dupont": {"12/34"}}
    index = ArchiveIndex(tmp_path, owners=owners)
    assert customer_folder(tmp_path, "12/34", "Dupont", index=index).name == "12_34 - Dupont"
    other = customer_folder(tmp_path, "12_34", "Dupont", index=index)
    assert other.name != "12_34 - Dupont"
    # Without the ledger's word, a hashed id never takes an unhashed folder.
    fresh = tmp_path / "fresh"
    (fresh / "12_34 - Dupont").mkdir(parents=True)
    assert customer_folder(fresh, "12/34", "Dupont").name != "12_34 - Dupont"
    assert customer_folder(fresh, "12_34", "Dupont").name == "12_34 - Dupont"
