import os
import time

import pytest

from grader.errors import UsageError
from grader.submissions import discover


def touch(path, mtime=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{}")
    if mtime:
        os.utime(path, (mtime, mtime))
    return path


def test_flat_folder_one_notebook_per_student(tmp_path):
    touch(tmp_path / "alice.ipynb")
    touch(tmp_path / "bob smith.ipynb")
    touch(tmp_path / "notes.txt")
    found = discover(tmp_path)
    assert [s.student_id for s in found.submissions] == ["alice", "bob_smith"]
    assert found.skipped == [(str(tmp_path / "notes.txt"), "not a notebook")]


def test_folder_per_student_keeps_the_newest_notebook(tmp_path):
    old = touch(tmp_path / "carol" / "draft.ipynb", mtime=time.time() - 100)
    new = touch(tmp_path / "carol" / "final.ipynb")
    touch(tmp_path / "carol" / ".ipynb_checkpoints" / "final-checkpoint.ipynb")
    touch(tmp_path / "dave" / "readme.md")
    found = discover(tmp_path)
    assert [(s.student_id, s.notebook) for s in found.submissions] == [("carol", new)]
    skipped = dict(found.skipped)
    assert str(old) in skipped and str(tmp_path / "dave") in skipped


def test_canvas_download_with_resubmissions(tmp_path):
    touch(tmp_path / "doejane_12345_67890_MLB_Project_FineTuning_Template.ipynb")
    touch(tmp_path / "doejane_12345_67999_MLB_Project_FineTuning_Template-2.ipynb")
    touch(tmp_path / "doejane_12345_67950_MLB_Project_FineTuning_Template-1.ipynb")
    touch(tmp_path / "roerichard_LATE_22222_70000_MLB_Project_FineTuning_Template.ipynb")
    found = discover(tmp_path)
    by_id = {s.student_id: s for s in found.submissions}
    assert set(by_id) == {"12345", "22222"}
    assert by_id["12345"].notebook.name.endswith("Template-2.ipynb") and by_id["12345"].attempt == 2
    assert by_id["12345"].display_name == "doejane" and by_id["22222"].canvas_user_id == "22222"
    assert len(found.skipped) == 2


def test_odd_file_names_become_safe_ids(tmp_path):
    touch(tmp_path / "weird name!!.ipynb")
    touch(tmp_path / ".hidden.ipynb")
    found = discover(tmp_path)
    assert [s.student_id for s in found.submissions] == ["weird_name"]
    assert found.skipped == [(str(tmp_path / ".hidden.ipynb"), "a hidden file (its name starts with a dot)")]


def test_a_missing_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        discover(tmp_path / "nope")
