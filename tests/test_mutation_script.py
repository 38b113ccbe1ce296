"""The machinery of bench/mutations.py (not the mutation run itself, which takes minutes).

Every mutation must still apply to today's source (its find text exactly once), the copy must be
a copy (the repository untouched) whose `reconciler` is the one imported, and a find text that is
missing or repeated must stop the script rather than silently test nothing.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("bench_mutations", REPO / "bench" / "mutations.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


mutations = _load()


def test_at_least_20_mutations_each_applying_exactly_once_to_todays_source() -> None:
    assert len(mutations.MUTATIONS) >= 20
    mutations.check_mutations(mutations.MUTATIONS)  # raises when a find text is not found exactly once
    for mutation in mutations.MUTATIONS:
        assert mutation.file.startswith("reconciler/"), mutation.name
        assert mutation.replace != mutation.find, mutation.name
        for test in mutation.tests:
            assert (REPO / test.split("::")[0]).is_file(), (mutation.name, test)


@pytest.mark.parametrize("text, count", [("a = 1\n", 0), ("x = 1\nx = 1\n", 2)])
def test_a_find_text_not_found_exactly_once_stops_the_script(text: str, count: int) -> None:
    with pytest.raises(mutations.MutationError, match=f"occurs {count} times"):
        mutations.mutate_text(text, [("x = 1", "x = 2")], "example")


def test_repeated_mutation_names_are_refused() -> None:
    first = mutations.MUTATIONS[0]
    with pytest.raises(mutations.MutationError, match="repeated"):
        mutations.check_mutations([first, first])


def test_a_mutation_changes_the_copy_only_and_the_copy_imports_its_own_reconciler(tmp_path: Path) -> None:
    mutation = next(m for m in mutations.MUTATIONS if m.name == "r9_archives_pending")
    files = [f for f in mutations.source_files() if f.startswith("reconciler/") or f == "pyproject.toml"]
    assert mutation.file in files
    original = (REPO / mutation.file).read_text(encoding="utf-8")
    copy = mutations.copy_tree(tmp_path / "copy", files=files)
    mutations.apply_mutation(copy, mutation)
    mutated = (copy / mutation.file).read_text(encoding="utf-8")
    assert mutation.find not in mutated and mutation.replace in mutated
    assert (REPO / mutation.file).read_text(encoding="utf-8") == original
    assert mutations.imported_from(copy) == (copy / "reconciler" / "__init__.py").resolve()
    with pytest.raises(mutations.MutationError, match="refusing"):
        mutations.apply_mutation(REPO, mutation)


def test_the_failing_tests_of_a_run_are_named(tmp_path: Path) -> None:
    (tmp_path / "test_x.py").write_text("def test_ok():\n    assert True\n\ndef test_bad():\n    assert 1 == 2\n")
    run = mutations.run_tests(tmp_path, ["test_x.py"], stop_first=True)
    assert not run.passed and run.failures == ["test_x.py::test_bad"]
    deselected = mutations.run_tests(tmp_path, ["test_x.py"], stop_first=True, deselect={"test_x.py::test_bad"})
    assert deselected.passed
