"""What a fresh Python has imported after running some code: the check behind the light-import tests."""
import json
import subprocess
import sys

from grader.course import ROOT

# The batch's libraries: none may load inside the sandbox or when a result is read back.
BATCH_LIBRARIES = ("nbformat", "nbconvert", "nbgrader", "jsonschema", "nbclient", "jupyter_client")


def modules_after(code: str) -> set[str]:
    """The modules (dotted names) a fresh ``python -P`` holds after running ``code`` in the kit's root."""
    listing = "import sys, json; print(json.dumps(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-P", "-c", f"{code}\n{listing}"], capture_output=True, text=True,
                          cwd=ROOT, timeout=300, check=True)
    return set(json.loads(done.stdout.strip().splitlines()[-1]))


def top_level(modules: set[str]) -> set[str]:
    """``{"grader.results", "numpy.linalg"}`` -> ``{"grader", "numpy"}``."""
    return {name.split(".")[0] for name in modules}
