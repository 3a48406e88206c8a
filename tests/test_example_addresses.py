"""Demo data reaches nobody: addresses at documentation domains are never sent to."""

from __future__ import annotations

from pathlib import Path

import pytest

from commplan_xl.excel.read import read_tables
from commplan_xl.excel.validate import is_example_address, validate
from tests.builders import DEFAULT_CUSTOMERS, make_workbook


@pytest.mark.parametrize(("address", "example"), [
    ("a@example.com", True), ("a@example.net", True), ("a@EXAMPLE.org", True),
    ("a@mail.example.com", True), ("a@shop.example", True), ("a@x.invalid", True),
    ("a@example.test", False), ("a@shop.test", False), ("a@example.fr", False),
    ("a@notexample.com", False), ("a@example.com.fr", False),
])
def test_documentation_domains(address: str, example: bool) -> None:
    """example.com/.net/.org and their subdomains, .example and .invalid are example
    addresses; .test (test servers) is not."""
    assert is_example_address(address) is example


def test_example_address_is_a_problem_at_its_cell_and_the_row_is_left_out(
        tmp_path: Path) -> None:
    """A customer with an example address is a `check` problem "example address" at its
    Customers cell, and the run leaves that customer (and its orders) out."""
    customers = [{**DEFAULT_CUSTOMERS[0], "email": "alice@example.test; alice@example.com"},
                 DEFAULT_CUSTOMERS[1]]
    model, _settings, problems = validate(read_tables(make_workbook(tmp_path,
                                                                    customers=customers)),
                                          home=tmp_path, environ={})
    mine = [p for p in problems if p.sheet == "Customers"]
    assert [(p.row, p.cell) for p in mine] == [(2, "C2")]
    assert '"alice@example.com" is an example address' in mine[0].message
    assert set(model.customers) == {"C002"}
