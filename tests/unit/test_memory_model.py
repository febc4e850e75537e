"""The one memory model (service/memory.py) and the places that must agree with it.

Terraform cannot import Python, so terraform/lambda.tf states the formula
again as a precondition on ``zipper_memory_mb``; this test evaluates that
expression for many inputs and compares it with ``required_mib``. Changing
one side without the other fails here.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service.memory import budget_for_memory_mib, process_ceiling_mib, required_mib

LAMBDA_TF = Path(__file__).resolve().parents[2] / "terraform" / "lambda.tf"
_PRECONDITION = re.compile(
    r'condition\s*=\s*each\.key != "zipper" \|\| (?P<expr>[^\n]*?)\s*<=\s*var\.zipper_memory_mb\n'
)


def terraform_required_mib(budget_mb: int, max_keys: int, batch_size: int) -> float:
    """Evaluate the precondition's left-hand side as Terraform would (plain arithmetic)."""
    found = _PRECONDITION.findall(LAMBDA_TF.read_text())
    assert len(found) == 1, f"expected one zipper memory precondition in {LAMBDA_TF}: {found}"
    expr = (
        found[0]
        .replace("var.zipper_budget_mb", str(budget_mb))
        .replace("var.max_keys", str(max_keys))
        .replace("var.zipper_batch_size", str(batch_size))
    )
    assert re.fullmatch(r"[0-9.+*/() ]+", expr), f"unexpected terms in {expr!r}"
    value: float = eval(expr)  # only digits and arithmetic, checked above
    return value


@pytest.mark.parametrize("budget_mb", [16, 64, 1024, 8192])
@pytest.mark.parametrize("max_keys", [1, 100_000, 10_000_000])
@pytest.mark.parametrize("batch_size", [1, 10])
def test_terraform_precondition_is_the_python_formula(
    budget_mb: int, max_keys: int, batch_size: int
) -> None:
    assert terraform_required_mib(budget_mb, max_keys, batch_size) == pytest.approx(
        required_mib(budget_mb, files=max_keys * batch_size), rel=1e-12
    )


@pytest.mark.parametrize("files", [0, 1000, 100_000, 1_000_000])
def test_the_budget_for_a_memory_size_fits_it_and_one_more_mib_would_not(files: int) -> None:
    for memory in range(128, 10_241, 7):
        budget = budget_for_memory_mib(memory, files)
        if budget <= 0:
            continue
        assert process_ceiling_mib(budget, files) <= memory
        assert required_mib(budget + 1, files) > memory
