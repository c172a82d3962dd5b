"""The records module at the bottom of the house: it imports nothing else of the grader, and an older run's
result JSON still loads into the same records (tests/data/results-written-by-9ed15ad.json was written by
the grader of commit 9ed15ad, before the records moved here and the statuses became StrEnums)."""
import json
from pathlib import Path

import pytest

from grader.results import (EXECUTE_MODE, GRADED, GRADER_ERROR, SAVED_OUTPUTS_MODE, VERIFY_MODE, CellError,
                            CheckResult, GradeResult, Mode, ShortAnswer, Status, Verification)
from module_listing import BATCH_LIBRARIES, modules_after, top_level

OLD_RESULTS = Path(__file__).parent / "data" / "results-written-by-9ed15ad.json"
HEAVY = (*BATCH_LIBRARIES, "numpy", "torch")


def test_the_records_module_imports_nothing_else_of_the_grader_and_nothing_heavy():
    found = modules_after("import grader.results")
    assert {name for name in found if name.startswith("grader.")} == {"grader.results"}
    assert not top_level(found) & set(HEAVY)


def test_loading_a_result_json_imports_nothing_heavy():
    found = modules_after(f"import json\nfrom grader.results import GradeResult\n"
                          f"data = json.loads(open({str(OLD_RESULTS)!r}).read())\n"
                          "result = GradeResult.from_dict(data['graded'])\nassert result.verification.loaded")
    assert not top_level(found) & set(HEAVY)


def test_the_listing_sees_another_grader_module_and_a_heavy_one():
    # negative control: the checks above would see them if anything pulled them in
    found = modules_after("import grader.execute")
    assert "grader.sandbox" in found and "nbclient" in found


def test_a_result_written_by_an_older_grader_loads_and_writes_the_same_json():
    for key, old in json.loads(OLD_RESULTS.read_text(encoding="utf-8")).items():
        result = GradeResult.from_dict(old)
        assert json.loads(json.dumps(result.to_dict())) == old, key


def test_the_older_result_loads_into_the_records_with_their_types():
    old = json.loads(OLD_RESULTS.read_text(encoding="utf-8"))
    graded, failed = GradeResult.from_dict(old["graded"]), GradeResult.from_dict(old["grader_error"])
    assert graded.status is Status.GRADED and graded.mode is Mode.VERIFY
    assert failed.status is Status.GRADER_ERROR and failed.mode is Mode.SAVED_OUTPUTS
    assert isinstance(graded.checks[0], CheckResult) and isinstance(graded.errors[0], CellError)
    assert isinstance(graded.answers[0], ShortAnswer) and isinstance(graded.verification, Verification)
    assert graded.verification.accuracy_ci == (0.3, 0.95) and graded.verification.hidden_predictions == [0, 1, 1, 0]
    assert graded.errors[0].where == 'the cell \'train\' under "8. Fine-tuning" (In [7])'
    assert graded.provenance.weights_sha256 == {"model.safetensors": "c" * 64}


def test_statuses_and_modes_are_their_plain_strings():
    assert GRADED == "graded" and GRADER_ERROR == "grader error" and f"{GRADED}" == "graded"
    assert (EXECUTE_MODE, VERIFY_MODE, SAVED_OUTPUTS_MODE) == ("execute", "verify", "saved outputs")
    written = json.dumps(GradeResult(student_id="s", notebook="s.ipynb", mode=VERIFY_MODE).to_dict())
    assert '"status": "graded"' in written and '"mode": "verify"' in written


def test_a_result_with_an_unknown_status_is_refused():
    # OutputFolder.load_result takes a ValueError for an unreadable result: such a student is graded again
    old = json.loads(OLD_RESULTS.read_text(encoding="utf-8"))["graded"]
    with pytest.raises(ValueError):
        GradeResult.from_dict({**old, "status": "passed with honours"})
