"""The run store keeps every run inside it, whatever the test name says."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness import store


@pytest.mark.parametrize("name", ["../..", "..", ".", "a/b", "/etc", "", ".hidden", "latest", "a\\..\\b", "x\0y"])
def test_a_name_that_leads_elsewhere_is_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(ValueError, match="test name"):
        store.new_run(tmp_path / "store", name)
    assert not any(p for p in tmp_path.rglob("*") if p.is_dir() and p.name != "store" and p != tmp_path / "store")


def test_a_symlink_planted_in_the_store_is_not_followed_out(tmp_path: Path) -> None:
    (tmp_path / "store").mkdir()
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "store" / "t").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="outside the store"):
        store.new_run(tmp_path / "store", "t")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_a_plain_name_makes_a_run_and_the_latest_links(tmp_path: Path) -> None:
    run = store.new_run(tmp_path / "store", "kvnode-register-partition")
    assert run.parent == (tmp_path / "store" / "kvnode-register-partition").resolve()
    assert (tmp_path / "store" / "latest").resolve() == run
