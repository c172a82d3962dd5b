import os
import unicodedata
import time

import nbformat
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
    # A name that had to be cleaned keeps a hash of itself: bob_smith.ipynb would be someone else.
    assert [s.student_id for s in found.submissions] == ["alice", "bob_smith-7e50351d"]
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
    assert [s.student_id for s in found.submissions] == ["weird_name-97bb83cb"]
    assert found.skipped == [(str(tmp_path / ".hidden.ipynb"), "a hidden file (its name starts with a dot)")]


def test_a_missing_folder_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError):
        discover(tmp_path / "nope")


def test_different_people_never_share_an_id(tmp_path):
    names = ["张伟.ipynb", "李娜.ipynb", "bob smith.ipynb", "bob_smith.ipynb", "Alice.ipynb", "alice.ipynb",
             "müllerjürgen_12345_67890_project.ipynb", "project.ipynb", "project-2.ipynb", "12345.ipynb",
             "प्रिया.ipynb", "!!!.ipynb", "???.ipynb",
             "bob_smith-7e50351d.ipynb",   # crafted to take the id of "bob smith"
             "łukaszé_777_888_project.ipynb", "mu\u0308ller_999_888_project.ipynb"]   # the last as macOS spells ü
    for name in names:
        touch(tmp_path / name)
    found = discover(tmp_path)
    ids = [s.student_id for s in found.submissions]
    assert len(ids) == len(set(ids)) == len(names) and found.skipped == []
    # Case apart too: a Mac's file system would make Alice.json and alice.json one file.
    assert len({i.casefold() for i in ids}) == len(ids)
    by_file = {s.notebook.name: s for s in found.submissions}
    assert by_file["张伟.ipynb"].student_id == "张伟"
    assert by_file["प्रिया.ipynb"].student_id == "प्रिया"
    assert by_file["bob_smith.ipynb"].student_id == "bob_smith"
    assert by_file["bob smith.ipynb"].student_id.startswith("bob_smith-")
    canvas = by_file["müllerjürgen_12345_67890_project.ipynb"]
    assert (canvas.canvas_user_id, canvas.display_name) == ("12345", "müllerjürgen")
    assert {s.canvas_user_id for s in found.submissions} == {"", "12345", "777", "999"}


def test_ids_are_safe_and_bounded_file_names(tmp_path):
    touch(tmp_path / ("é" * 120 + ".ipynb"))
    touch(tmp_path / "-rf \x1b[31m\u202e.ipynb")
    touch(tmp_path / "caf\udce9.ipynb")   # a Latin-1 name that is not UTF-8
    for submission in discover(tmp_path).submissions:
        student_id = submission.student_id
        assert student_id and len(student_id.encode("utf-8")) <= 100
        assert not student_id.startswith((".", "-")) and "/" not in student_id and "\\" not in student_id
        assert all(unicodedata.category(char)[0] in "LNM" or char in "._-" for char in student_id), student_id


def test_only_the_same_canvas_user_resubmits(tmp_path):
    touch(tmp_path / "doejane_12345_67890_project.ipynb")
    touch(tmp_path / "doejane_12345_67999_project-1.ipynb")
    touch(tmp_path / "carol" / "project.ipynb")
    touch(tmp_path / "carol.ipynb")     # the same name as a folder: two files, so never one silently dropped
    found = discover(tmp_path)
    graded = {s.notebook for s in found.submissions}
    skipped = dict(found.skipped)
    assert skipped == {str(tmp_path / "doejane_12345_67890_project.ipynb"):
                       "resubmitted as doejane_12345_67999_project-1.ipynb"}
    assert graded == {tmp_path / "doejane_12345_67999_project-1.ipynb", tmp_path / "carol" / "project.ipynb",
                      tmp_path / "carol.ipynb"}


def test_a_notebook_in_a_hidden_folder_is_reported(tmp_path):
    touch(tmp_path / ".alice" / "project.ipynb")
    touch(tmp_path / ".ipynb_checkpoints" / "bob-checkpoint.ipynb")
    touch(tmp_path / "__MACOSX" / "._bob.ipynb")
    touch(tmp_path / "bob.ipynb")
    found = discover(tmp_path)
    assert [s.student_id for s in found.submissions] == ["bob"]
    assert found.skipped == [(str(tmp_path / ".alice"), "a hidden folder (its name starts with a dot)")]


def test_each_notebook_is_paired_with_the_model_submitted_beside_it(tmp_path):
    notebook = nbformat.writes(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")]))
    files = {"doejane_4242_9001_project.ipynb": notebook, "doejane_4242_9001_submission.json": "{}",
             "roesam_77_9002_project.ipynb": notebook, "roesam_77_9002_sentiment-model.zip": "zip",
             "alice.ipynb": notebook, "alice_bob.ipynb": notebook, "alice-model.zip": "zip",
             "alice_bob-model.zip": "zip"}
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    (tmp_path / "carol" / "sentiment-model").mkdir(parents=True)
    (tmp_path / "carol" / "project.ipynb").write_text(notebook)
    (tmp_path / "carol" / "sentiment-model" / "config.json").write_text("{}")
    discovery = discover(tmp_path)
    models = {s.student_id: s.model and s.model.name for s in discovery.submissions}
    assert models == {"4242": "doejane_4242_9001_submission.json", "77": "roesam_77_9002_sentiment-model.zip",
                      "alice": "alice-model.zip", "alice_bob": "alice_bob-model.zip", "carol": "sentiment-model"}
    assert discovery.skipped == []


def test_a_dangling_notebook_link_in_a_students_folder_does_not_stop_discovery(tmp_path):
    """A link named like a notebook to a file that is not there (the grading machine's hidden set, by a path
    that exists only there): the folder's real notebook is graded, and the rest of the class with it."""
    touch(tmp_path / "alice" / "project.ipynb", mtime=time.time())
    link = tmp_path / "alice" / "hidden.ipynb"
    link.symlink_to(tmp_path / "nowhere" / "hidden-set.json")
    os.utime(link, (1, 1), follow_symlinks=False)
    touch(tmp_path / "bob.ipynb")
    found = discover(tmp_path)
    assert [(s.student_id, s.notebook.name) for s in found.submissions] == [("alice", "project.ipynb"),
                                                                            ("bob", "bob.ipynb")]
