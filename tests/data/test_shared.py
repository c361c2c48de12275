"""shared_data_dir: $RAR_SHARED_DATA first, else shared/data beside a parent of the anchor."""

import pytest

from rar_jax.data import shared


def test_the_environment_variable_wins(tmp_path, monkeypatch):
    monkeypatch.setenv(shared.ENV_VAR, str(tmp_path))
    assert shared.shared_data_dir("/anywhere/configs/x.py") == tmp_path


def test_found_beside_a_parent_of_the_anchor(tmp_path, monkeypatch):
    monkeypatch.delenv(shared.ENV_VAR, raising=False)
    (tmp_path / "shared" / "data").mkdir(parents=True)
    anchor = tmp_path / "checkout" / "configs" / "quickstart.py"
    anchor.parent.mkdir(parents=True)
    anchor.write_text("")
    assert shared.shared_data_dir(anchor) == tmp_path / "shared" / "data"


def test_a_missing_file_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(shared.ENV_VAR, str(tmp_path))
    (tmp_path / "there.txt").write_text("x")
    assert shared.shared_file("there.txt") == tmp_path / "there.txt"
    with pytest.raises(FileNotFoundError, match="RAR_SHARED_DATA"):
        shared.shared_file("paper_prompts/README.md")
