"""Fixture submissions, each named after its scenario: the autograder's and the adversarial corpus.

The autograder's scenarios are built from the answer key by one edit. Each edit names the cell
it changes and the exact text it replaces, and fails loudly when the answer key no longer
contains that text, so the fixtures cannot drift from the key.

The adversarial scenarios (``ATTACKS``) are short notebooks: the answer key's parameters cell,
then the attack. They get the paths they aim at (the hidden set, the output folder, another
student's folder) from ``Targets``, as a student who guessed them would.

``EXPECTED`` is the golden verdict: the status, the checks each scenario must fail and must
pass, and words the reason must contain.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import nbformat

from grader.build import ANSWER_KEY, ROOT, build_template
from grader.rubric import CHECKS
from grader.submissions import safe_id


def _cell(nb, cell_id):
    return next(cell for cell in nb.cells if cell.get("id") == cell_id)


def _replace(nb, cell_id, old, new):
    cell = _cell(nb, cell_id)
    if old not in cell.source:
        raise AssertionError(f"scenario edit no longer applies: {old!r} not in cell {cell_id!r} of the answer key")
    cell.source = cell.source.replace(old, new)


def _insert_after(nb, cell_id, source):
    index = next(i for i, cell in enumerate(nb.cells) if cell.get("id") == cell_id)
    nb.cells.insert(index + 1, nbformat.v4.new_code_cell(source))


def passes(nb):
    return nb


def below_threshold(nb):
    _replace(nb, "training-args", "learning_rate=LEARNING_RATE", "learning_rate=1e-9")


def raises_midway(nb):
    _replace(nb, "examples", 'examples = splits["train"]', 'examples = split["train"]')


def too_few_predictions(nb):
    _insert_after(nb, "course-reviews", "predictions = predictions[:3]")


def one_label_only(nb):
    _insert_after(nb, "course-reviews", 'predictions = [p for p in predictions if p["label"] == "positive"] * 3')


def no_save(nb):
    _replace(nb, "save-reload", "trainer.model.save_pretrained(SAVE_DIR)", "pass  # forgot to save")


def reload_differs(nb):
    _insert_after(nb, "course-reviews", 'predictions = [dict(p, confidence=0.999) for p in predictions]')


def infinite_loop(nb):
    _insert_after(nb, "seed", "while True:\n    pass")


def prints_fake_metrics(nb):
    below_threshold(nb)
    _insert_after(nb, "test-eval", 'test_metrics = {"accuracy": 0.97, "precision": 0.96, "recall": 0.98, "f1": 0.97}\n'
                                   'print(test_metrics)')


def labels_as_ids(nb):
    """predict_sentiment returns the label's id and P(positive): one mistake, the predictions check alone."""
    _replace(nb, "predict", '''"label": model.config.id2label[int(label_id)], "confidence": float(confidence)}
            for text, label_id, confidence in zip(texts, label_ids, confidences)]''',
             '''"label": int(label_id), "confidence": float(positive)}
            for text, label_id, positive in zip(texts, label_ids, probabilities[:, 1])]''')


def no_tokenizer_saved(nb):
    """The model saved without its tokenizer (reloaded with the one in memory): the reload check alone."""
    _replace(nb, "save-reload", "tokenizer.save_pretrained(SAVE_DIR)\n", "")
    _replace(nb, "save-reload", "reloaded_tokenizer = AutoTokenizer.from_pretrained(SAVE_DIR)",
             "reloaded_tokenizer = tokenizer")


def macro_f1(nb):
    """compute_metrics averages over both classes: its self-check fails (on fixed reviews: the corpus's model is
    right on every test review, where macro and binary F1 are equal), which costs ran_to_end alone."""
    _replace(nb, "compute-metrics", 'average="binary"', 'average="macro"')


def unstratified_split(nb):
    """A split without stratify_by_column and seed: its self-check sees the shares, ran_to_end alone."""
    _replace(nb, "split", 'subset.train_test_split(test_size=0.30, stratify_by_column="label", seed=SEED)',
             "subset.train_test_split(test_size=0.30)")
    _replace(nb, "split", 'train_rest["test"].train_test_split(test_size=0.50, stratify_by_column="label", seed=SEED)',
             'train_rest["test"].train_test_split(test_size=0.50)')


def metadata_stripped(nb):
    for cell in nb.cells:
        cell.metadata = {}


def overwrites_self_checks(nb):
    below_threshold(nb)
    for cell in nb.cells:
        if cell.get("id", "").startswith("check-"):
            cell.source = 'print("OK: check passed")'


@dataclass(frozen=True)
class Expected:
    fails: frozenset = frozenset()
    passes: frozenset = frozenset()
    status: str = "graded"
    reason: str = ""       # in the result's reason or a failed check's message (a regex)
    ran_message: str = ""  # in the ran_to_end check's message (a regex)


# A notebook that ran without an error, but is not the course's: its ran_to_end message says so (an error
# in a cell would be named instead). The attacks are short notebooks, not the answer key's cells.
RAN_BUT_NOT_THE_COURSES = "^this is not the course's notebook as given"


def _expect(fails=(), passes=None, reason="", ran_message=""):
    passes = set(CHECKS) - set(fails) if passes is None else passes
    return Expected(frozenset(fails), frozenset(passes), reason=reason, ran_message=ran_message)


def _ran_but_not_the_courses(fails, reason=""):
    """An attack notebook that ran to its end without an error: it fails ran_to_end only as not the course's."""
    return _expect(fails=set(fails) | {"ran_to_end"}, reason=reason, ran_message=RAN_BUT_NOT_THE_COURSES)


EDITS = {
    "passes": passes,
    "below-threshold": below_threshold,
    "raises-midway": raises_midway,
    "too-few-predictions": too_few_predictions,
    "one-label-only": one_label_only,
    "no-save": no_save,
    "reload-differs": reload_differs,
    "infinite-loop": infinite_loop,
    "prints-fake-metrics": prints_fake_metrics,
    "metadata-stripped": metadata_stripped,
    "overwrites-self-checks": overwrites_self_checks,
    "labels-as-ids": labels_as_ids,
    "no-tokenizer-saved": no_tokenizer_saved,
    "macro-f1": macro_f1,
    "unstratified-split": unstratified_split,
}
# Mistakes that a self-check of the notebook catches, as an error of its run: verify mode reads that error
# from the saved outputs by the same code as any other (raises-midway), so they are not run again there.
SELF_CHECKED = {"macro-f1", "unstratified-split"}

EXPECTED = {
    "passes": _expect(),
    "metadata-stripped": _expect(),
    # An untrained classifier: its figures fail; whatever it predicts, it still reloads.
    "below-threshold": _expect(fails={"accuracy", "f1"}, passes={"ran_to_end", "no_todo_left", "reload"}),
    "raises-midway": _expect(fails={"ran_to_end"}),
    "too-few-predictions": _expect(fails={"predictions"}),
    "one-label-only": _expect(fails={"predictions"}),
    # Nothing saved: the reload cell raises, and there is no model to measure or to make the predictions.
    "no-save": _expect(fails={"ran_to_end", "accuracy", "f1", "predictions", "reload"}, passes={"no_todo_left"}),
    "reload-differs": _expect(fails={"predictions", "reload"}),
    "infinite-loop": _expect(fails=set(CHECKS) - {"no_todo_left"}, passes={"no_todo_left"}),
    # Figures typed in after the evaluation: the metrics self-check recomputes them from the test predictions.
    "prints-fake-metrics": _expect(fails={"accuracy", "f1", "ran_to_end"}, passes={"no_todo_left", "reload"},
                                   ran_message="'metrics-self-check' .*test_metrics differs .*not figures written by hand"),
    "todo-left": _expect(fails=set(CHECKS), passes=set()),
    "not-json": Expected(status="not gradable"),
    # The self-checks are the student's aid; the grader measures the model, so this still fails, and
    # edited self-checks are no longer the course's notebook.
    "overwrites-self-checks": _expect(fails={"accuracy", "f1", "ran_to_end"}, passes={"no_todo_left", "reload"},
                                      ran_message="'check-accuracy' .* was edited"),
    # Each mistake: one failed check, whose message names it.
    "labels-as-ids": _expect(fails={"predictions"}, reason=r"labels are ids \(0/1\).* and the confidences are P\(positive\)"),
    "no-tokenizer-saved": _expect(fails={"reload"}, reason=r"no tokenizer .*tokenizer\.save_pretrained\(SAVE_DIR\)"),
    "macro-f1": _expect(fails={"ran_to_end"}, reason=r"'metrics-self-check' under .* raised AssertionError.*"
                                                      r'on five reviews .*its F1 is the macro F1.*average="binary"'),
    "unstratified-split": _expect(fails={"ran_to_end"}, reason=r"'split-self-check' under \"3\. The data > Subset and "
                                                              r'split\" .*raised AssertionError.*stratify_by_column'),
}


# --- the adversarial corpus ----------------------------------------------------------------
@dataclass(frozen=True)
class Targets:
    """What the attacks aim at, as paths on the grading machine."""

    output_dir: Path        # the grader's output folder: gradebook, results, other students' work
    hidden_set: Path        # the instructor's hidden evaluation CSV
    outside: Path           # a folder outside every sandbox; nothing may appear in it
    port: int = 0           # a TCP port listening on the grader's loopback
    home: Path = Path.home()
    repository: Path = ROOT
    # An earlier grading run's private folder, left in the project's build/ (hidden reviews with labels).
    earlier_run: Path = ROOT / "build" / "an-earlier-grading-run" / ".grader" / "hidden-set.json"

    @property
    def other_model(self) -> Path:
        """Another student's saved model, in the output folder's working area while grading runs."""
        return self.output_dir / "work" / "another-student" / "outputs" / "sentiment-model"

    @property
    def victims(self) -> list[Path]:
        """Files outside that links planted in a student's folder point at; none may change."""
        return [self.outside / name for name in ("victim-request", "victim-result", "victim-notebook")]

    @property
    def marker(self) -> Path:
        return self.outside / "pwned"

    @property
    def writes_attempted(self) -> list[Path]:
        """Where the attacks try to write; none of these may exist after grading."""
        return [self.marker, self.home / "pwned-by-a-student", self.repository / "pwned-by-a-student"]


def _attack(key, *sources: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=[copy.deepcopy(_cell(key, "parameters"))]
                                    + [nbformat.v4.new_code_cell(source) for source in sources],
                                    metadata=key.metadata)


HAND_MADE_CONTRACT = '''
test_metrics = {"accuracy": 0.99, "precision": 0.99, "recall": 0.99, "f1": 0.99}
predictions = [{"text": t, "label": l, "confidence": 0.99} for t, l in
               [("great", "positive"), ("love it", "positive"), ("excellent", "positive"),
                ("awful", "negative"), ("broken", "negative"), ("waste", "negative")]]
'''


def _attacks(t: Targets, key) -> dict:
    other_model = t.other_model
    return {
        "fork-bomb": _attack(key, "import os\nwhile True:\n    os.fork()"),
        "memory-hog": _attack(key, "hog = []\nwhile True:\n    hog.append(b'x' * 100_000_000)"),
        "disk-filler": _attack(key, "for i in range(10_000):\n    with open(f'fill-{i}', 'wb') as f:\n"
                               "        f.write(b'x' * 50_000_000)"),
        "one-huge-file": _attack(key, "with open('huge', 'wb') as f:\n    for _ in range(1_000):\n"
                                 "        f.write(b'x' * 10_000_000)"),
        "prints-gigabytes": _attack(key, "while True:\n    print('x' * 1_000_000)"),
        "sleeps-ignoring-interrupts": _attack(key,
            "import signal, time\nfor s in (signal.SIGINT, signal.SIGTERM):\n    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n    try:\n        time.sleep(1000)\n    except BaseException:\n        pass"),
        "exits-its-process": _attack(key, "import os\nos._exit(0)", "print('not reached')"),
        "kills-its-kernel": _attack(key, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"),
        "reads-hidden-set": _attack(key, f"print(open({str(t.hidden_set)!r}).read()[:200])",
                                    f"print(open({str(t.output_dir / '.grader' / 'hidden-set.json')!r}).read()[:200])"),
        "scans-for-csv": _attack(key,
            "import os\nfound = []\nfor root, dirs, files in os.walk('/'):\n"
            "    dirs[:] = [d for d in dirs if os.path.join(root, d) not in ('/proc', '/sys', '/dev')]\n"
            "    found += [os.path.join(root, f) for f in files if f.endswith(('.csv', 'hidden-set.json'))]\n"
            f"leaked = [f for f in found if f in ({str(t.hidden_set)!r}, {str(t.earlier_run)!r}) "
            "or f.endswith('hidden-set.json')]\n"
            "print(len(found), 'CSV files found;', 'leaked:', leaked)\nassert not leaked, leaked"),
        "opens-socket": _attack(key, f"import socket\nsocket.create_connection(('127.0.0.1', {t.port}), timeout=5)"),
        "writes-outside-its-folder": _attack(key,
            *(f"open({str(path)!r}, 'w').write('PWN' + 'ED')" for path in reversed(t.writes_attempted)),
            "open('/tmp/pwned', 'w').write('PWN' + 'ED')  # its own /tmp: allowed, and gone afterwards"),
        "edits-the-grader": _attack(key,
            "import grader, pathlib\n"
            "pathlib.Path(grader.__file__).write_text('raise SystemExit(' + repr('PWN' + 'ED') + ')')"),
        "edits-the-gradebook": _attack(key,
            f"open({str(t.output_dir / 'gradebook.csv')!r}, 'a').write('passes,PWN' + 'ED,100')",
            f"open({str(t.output_dir / 'results' / 'edits-the-gradebook.json')!r}, 'w').write('{{}}')"),
        "fakes-test-metrics": _attack(key,
            "from transformers import AutoModelForSequenceClassification, AutoTokenizer\n"
            "AutoModelForSequenceClassification.from_pretrained(MODEL_NAME, num_labels=2).save_pretrained('model')\n"
            "AutoTokenizer.from_pretrained(MODEL_NAME).save_pretrained('model')\nSAVE_DIR = 'model'",
            HAND_MADE_CONTRACT),
        "steals-another-students-model": _attack(key,
            f"import shutil\nSAVE_DIR = {str(other_model)!r}", HAND_MADE_CONTRACT,
            "shutil.copytree(SAVE_DIR, 'stolen')"),
        "links-to-another-students-model": _attack(key,
            f"import os\nos.symlink({str(other_model)!r}, 'model')\nSAVE_DIR = 'model'", HAND_MADE_CONTRACT),
        "save-dir-is-the-course-model": _attack(key, "SAVE_DIR = MODEL_NAME", HAND_MADE_CONTRACT),
        "hand-typed-contract": _attack(key, HAND_MADE_CONTRACT),
        "forges-a-self-check-id": _forged_self_check(key),
        "plants-links-for-the-grader": _attack(key,
            "import os\n" + "".join(f"os.path.lexists({name!r}) and os.remove({name!r})\n"
                                   f"os.symlink({str(victim)!r}, {name!r})\n" for victim, name in
                                   zip(t.victims, ("verify-request.json", "verify-result.json", "submission.ipynb")))
            + "SAVE_DIR = 'model'", HAND_MADE_CONTRACT),
        "reads-an-earlier-run": _attack(key, f"print(open({str(t.earlier_run)!r}).read()[:200])"),
        "raises-a-huge-error": _attack(key, "raise ValueError('x' * 200_000_000)"),
        "fills-dev-shm": _attack(key, "for i in range(20):\n    open(f'/dev/shm/fill-{i}', 'wb').write(b'x' * 100_000_000)"),
        "pickle-payload": _attack(key,
            "import json, os, pickle\nos.makedirs('model', exist_ok=True)\n"
            "class Payload:\n    def __reduce__(self):\n"
            f"        return (os.system, ({'touch ' + str(t.marker)!r},))\n"
            "with open('model/pytorch_model.bin', 'wb') as f:\n    pickle.dump(Payload(), f)\n"
            "json.dump({'model_type': 'bert', 'architectures': ['BertForSequenceClassification']},"
            " open('model/config.json', 'w'))\nSAVE_DIR = 'model'", HAND_MADE_CONTRACT),
    }


def _forged_self_check(key) -> nbformat.NotebookNode:
    """A failing cell given a self-check's id: only the answer key's own self-check source is excused."""
    nb = _attack(key, "raise RuntimeError('this cell is broken')", HAND_MADE_CONTRACT)
    nb.cells[1].id = "check-accuracy"
    return nb


FLAT = {"ran_to_end", "accuracy", "f1", "predictions", "reload"}   # an attack's failures when it stops
ATTACK_EXPECTED = {
    "fork-bomb": _expect(fails=FLAT, reason="more than .* processes"),
    "memory-hog": _expect(fails=FLAT, reason="of memory"),
    "disk-filler": _expect(fails=FLAT, reason="to disk"),
    "one-huge-file": _expect(fails=FLAT, reason="File too large"),
    # Stopped by the output limit, or, when the grader reads the kernel's output more slowly than it is printed
    # (a loaded machine: CI's run measured it), by the memory limit first, the unread output queued in the kernel.
    "prints-gigabytes": _expect(fails=FLAT, reason=r"printed more than .* of output|used more than .* of memory"),
    "sleeps-ignoring-interrupts": _expect(fails=FLAT, reason="time limit"),
    "exits-its-process": _expect(fails=FLAT, reason="kernel died"),
    "kills-its-kernel": _expect(fails=FLAT, reason="kernel died"),
    "reads-hidden-set": _expect(fails=FLAT, reason="FileNotFoundError"),
    # Nothing hidden is found, so the scan itself runs to its end.
    "scans-for-csv": _ran_but_not_the_courses(FLAT, reason="SAVE_DIR is not defined"),
    "opens-socket": _expect(fails=FLAT, reason="ConnectionRefusedError|Network is unreachable"),
    "writes-outside-its-folder": _expect(fails=FLAT, reason="Read-only file system"),
    "edits-the-grader": _expect(fails=FLAT, reason="Read-only file system"),
    "edits-the-gradebook": _expect(fails=FLAT, reason="Read-only file system|No such file"),
    "fakes-test-metrics": _ran_but_not_the_courses({"accuracy", "f1", "predictions", "reload"}, reason="reproduce"),
    "steals-another-students-model": _expect(fails=FLAT, reason="FileNotFoundError"),
    # Refused as outside the student's folder (the model check does not see the other folder either).
    "links-to-another-students-model": _ran_but_not_the_courses(FLAT, reason="outside|does not exist"),
    # Outside the student's folder: refused, and not even there for the model check's sandbox.
    "save-dir-is-the-course-model": _ran_but_not_the_courses(FLAT, reason="outside|does not exist"),
    "pickle-payload": _ran_but_not_the_courses(FLAT, reason="pickle"),
    # Predictions and metrics typed by hand, no model: only having no TODO earns points.
    "hand-typed-contract": _ran_but_not_the_courses(FLAT, reason="no saved model"),
    "forges-a-self-check-id": _expect(fails=FLAT, reason=r"the cell 'check-accuracy' \(In \[\d+\]\) raised RuntimeError"),
    "plants-links-for-the-grader": _ran_but_not_the_courses(FLAT, reason="does not exist"),
    "reads-an-earlier-run": _expect(fails=FLAT, reason="FileNotFoundError"),
    "raises-a-huge-error": _expect(fails=FLAT, reason="raised ValueError: x"),
    "fills-dev-shm": _expect(fails=FLAT, reason="No space left on device"),
}
CAFE_FILE, EVIL_FILE = "caf\udce9-latin-1-name", "a\\..\\..\\grader\\evil"
CAFE, EVIL = safe_id(CAFE_FILE), safe_id(EVIL_FILE)   # their student ids
# Files that are not a normal notebook at all.
FILE_EXPECTED = {
    "notebook-of-100-mb": Expected(status="not gradable", reason="over 50 MB"),
    "nbformat-3": _expect(),   # converted to nbformat 4, then graded like any other
    "empty-notebook": Expected(status="not gradable", reason="no code cells"),
    "empty-file": Expected(status="not gradable", reason="not a valid Jupyter notebook"),
    "not-utf-8": Expected(status="not gradable", reason="not a valid Jupyter notebook"),
    CAFE: _ran_but_not_the_courses(FLAT),          # file name caf\xe9-latin-1-name
    EVIL: _ran_but_not_the_courses(FLAT),          # file name a\\..\\..\\grader\\evil
    "links-to-the-answer-key": Expected(status="not gradable", reason="link"),
}
CORPUS_EXPECTED = {**EXPECTED, **ATTACK_EXPECTED, **FILE_EXPECTED}


def _write_file_scenario(folder: Path, name: str, key) -> None:
    harmless = _attack(key, "print('hello')")
    if name == "notebook-of-100-mb":
        big = _attack(key, "print('hello')")
        big.cells[-1].outputs = [nbformat.v4.new_output("stream", text="x" * 100_000_000)]
        nbformat.write(big, folder / f"{name}.ipynb")
    elif name == "nbformat-3":
        nbformat.write(nbformat.convert(copy.deepcopy(key), 3), folder / f"{name}.ipynb")
    elif name == "empty-notebook":
        nbformat.write(nbformat.v4.new_notebook(), folder / f"{name}.ipynb")
    elif name == "empty-file":
        (folder / f"{name}.ipynb").write_bytes(b"")
    elif name == "not-utf-8":
        (folder / f"{name}.ipynb").write_bytes(nbformat.writes(harmless).replace("hello", "caf\u00e9")
                                               .encode("utf-8").replace("caf\u00e9".encode(), b"caf\xe9"))
    elif name in (CAFE, EVIL):
        (folder / f"{CAFE_FILE if name == CAFE else EVIL_FILE}.ipynb").write_text(nbformat.writes(harmless),
                                                                                   encoding="utf-8")
    elif name == "links-to-the-answer-key":
        (folder / f"{name}.ipynb").symlink_to(ANSWER_KEY)
    else:
        raise KeyError(name)


def write_scenarios(folder: Path, names=None, targets: Targets | None = None) -> Path:
    """Write ``<scenario>.ipynb`` for each scenario into ``folder`` (attacks need ``targets``)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = nbformat.read(ANSWER_KEY, as_version=4)
    attacks = _attacks(targets, key) if targets else {}
    for name in names or EXPECTED:
        path = folder / f"{name}.ipynb"
        if name == "not-json":
            path.write_text("this is not a notebook {", encoding="utf-8")
        elif name == "todo-left":
            nbformat.write(build_template(), path)
        elif name in ATTACK_EXPECTED:
            nbformat.write(attacks[name], path)
        elif name in FILE_EXPECTED:
            _write_file_scenario(folder, name, key)
        else:
            nb = copy.deepcopy(key)
            EDITS[name](nb)
            nbformat.write(nb, path)
    return folder


# --- fast fixtures: a class of students that each cost seconds, not a training run ------------
def _typo_in_resume_import(nb):
    # As typed: transformers_ for transformers. (else that cell alone imports transformers, seconds of CPU)
    _replace(nb, "resume", "from transformers.trainer_utils import", "from transformers_trainer_utils import")


def typos_in_imports(nb):
    """The imports fail on their first line, and the checkpoint cell's too: every cell fails at once."""
    _replace(nb, "imports", "import json\n", "import jsonn\n")
    _typo_in_resume_import(nb)


def typos_after_os_import(nb):
    """The imports fail after ``os``: SAVE_DIR is still defined, so the model check runs (and finds no model)."""
    _replace(nb, "imports", "import matplotlib.pyplot as plt", "import matplotlib.pyplott as plt")
    _typo_in_resume_import(nb)


def exits_before_the_imports(nb):
    """A stray ``os._exit`` (copied from a script) after the first cell: the kernel dies at once."""
    _insert_after(nb, "install", "import os\nos._exit(0)")


FAST_EDITS = {"typos-in-imports": typos_in_imports, "typos-after-os-import": typos_after_os_import,
              "exits-before-the-imports": exits_before_the_imports}
# Canvas's lastfirst in several scripts, combining marks (Mn, Mc) among them; the NFD spellings are the
# ones a zip unpacked on macOS gives.
CANVAS_NAMES = ["doejane", "müllerjürgen", "शर्माप्रिया", "ศรีสุขสมชาย", "முருகன்கவிதா", "nguyễnthị", "김민준",
                "o-brienseán", "ἀλέξανδρος"]


def canvas_file_name(index: int, name: str) -> str:
    """A Canvas download's file name for student ``index``: lastfirst_userid_submissionid_file.ipynb."""
    return f"{name}_{10_000 + index}_{900_000 + index}_MLB_Project_FineTuning_Template.ipynb"


def write_fast_class(folder: Path, count: int, edits=tuple(FAST_EDITS), canvas: bool = True) -> Path:
    """``count`` fast-failing students made from the answer key by the named ``edits`` in turn, under Canvas
    download names (half of them spelled NFD, as macOS unzips them) or plain ``student-N.ipynb`` names."""
    import unicodedata

    folder.mkdir(parents=True, exist_ok=True)
    key = nbformat.read(ANSWER_KEY, as_version=4)
    made = {}
    for name in edits:
        made[name] = copy.deepcopy(key)
        FAST_EDITS[name](made[name])
    for index in range(count):
        nb = made[edits[index % len(edits)]]
        if canvas:
            name = CANVAS_NAMES[index % len(CANVAS_NAMES)]
            file_name = unicodedata.normalize("NFD" if index % 2 else "NFC", canvas_file_name(index, name))
        else:
            file_name = f"student-{index:03d}.ipynb"
        nbformat.write(nb, folder / file_name)
    return folder
