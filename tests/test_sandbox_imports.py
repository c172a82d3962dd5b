"""What the programs that run inside the sandbox import: twice per student, so it must stay light.

`python -P -m grader.confine` starts every sandboxed kernel and `python -P -m grader.model_check` is the model
check. Each imports the package `grader` first; when the package face imported the batch, every start paid
for nbformat, nbconvert and nbgrader (about 4 s on the 2-core CI machine).
"""
import json

from module_listing import BATCH_LIBRARIES as HEAVY, modules_after, top_level


def test_the_kernel_wrapper_imports_nothing_heavy():
    # what `python -m grader.confine` imports before it execs the kernel
    assert not top_level(modules_after("import grader.confine")) & set(HEAVY)


def test_the_model_check_imports_nothing_heavy_even_after_checking_a_model(saved_model_folder, tiny_model_dir,
                                                                          tmp_path):
    hidden = tmp_path / "hidden.json"
    hidden.write_text(json.dumps([{"text": "great product", "label": 1}, {"text": "awful product", "label": 0}]))
    request = {"save_dir": str(saved_model_folder), "allowed_root": str(saved_model_folder.parent),
               "hidden_set": str(hidden), "max_length": 32, "base_model": str(tiny_model_dir),
               "test_split": str(hidden), "test_max_length": 32,
               "predictions": [{"text": "great", "label": "positive", "confidence": 0.9}]}
    found = top_level(modules_after(
        f"import grader.model_check.worker as w\nresult = w.check_model({request!r})\n"
        "assert result.loaded and result.base_model_checked and result.test_split_metrics, result"))
    assert "transformers" in found   # it did load the model: the list is not of an empty run
    assert not found & set(HEAVY)


def test_the_listing_sees_a_heavy_import():
    # negative control: the check above would see nbformat if anything pulled it in
    assert "nbformat" in modules_after("import grader.batch")
