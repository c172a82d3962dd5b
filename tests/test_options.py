"""The grading options in one place (grader.options): one ``mode`` instead of two booleans, its JSON form, and
the settings a grade depends on."""
import json

import pytest

from grader.errors import UsageError
from grader.options import GradingOptions, graded_settings, mode_from_flags, options_from_dict, options_to_dict
from grader.results import Mode


def test_the_cli_flags_give_one_mode_and_both_at_once_are_refused():
    assert mode_from_flags(verify=False, no_execute=False) is Mode.EXECUTE
    assert mode_from_flags(verify=True, no_execute=False) is Mode.VERIFY
    assert mode_from_flags(verify=False, no_execute=True) is Mode.SAVED_OUTPUTS
    with pytest.raises(UsageError, match="choose one"):
        mode_from_flags(verify=True, no_execute=True)


def test_a_mode_given_as_text_is_the_mode_and_an_unknown_one_is_a_usage_error():
    assert GradingOptions(mode="verify").mode is Mode.VERIFY
    with pytest.raises(UsageError, match="'verfiy' is none of 'execute', 'verify', 'saved outputs'"):
        GradingOptions(mode="verfiy")


def test_the_json_form_round_trips_the_mode_and_reads_an_older_runs_two_booleans():
    for mode in Mode:
        assert options_from_dict(options_to_dict(GradingOptions(mode=mode))).mode is mode
    older = options_to_dict(GradingOptions())
    del older["mode"]
    for booleans, mode in (({"execute": True, "verify_submitted": True}, Mode.VERIFY),
                           ({"execute": False, "verify_submitted": False}, Mode.SAVED_OUTPUTS),
                           ({"execute": True, "verify_submitted": False}, Mode.EXECUTE)):
        assert options_from_dict({**older, **booleans}).mode is mode
    assert options_from_dict(older).mode is Mode.EXECUTE and "mode" not in older   # the caller's dict is left as it was


def test_the_mode_is_part_of_what_a_grade_depends_on():
    settings = {mode: json.loads(graded_settings(GradingOptions(mode=mode), "digest", sandboxed=True))
                for mode in Mode}
    assert [settings[mode]["mode"] for mode in Mode] == ["execute", "verify", "saved outputs"]
    assert len({json.dumps(each, sort_keys=True) for each in settings.values()}) == 3
