"""Write a package set of environments/ from one of Colab's published runtimes.

Colab publishes each runtime's packages in the GitHub repository googlecolab/backend-info:
``pip-freeze.gpu.txt`` (the GPU runtime's ``pip freeze``) and ``os-info-gpu.txt`` (its Python), at the commit
its README names for each pinned runtime (the newest commit is the current runtime). This script keeps, of that
freeze, the packages the notebooks run on (``PACKAGES``: what they import and everything those need, ipykernel
included), each at Colab's version, and writes them as a requirements file with its date and source:

    python environments/colab_pins.py pip-freeze.gpu.txt --runtime "current runtime" --date 2026-08-19 \\
        --commit a724079... --python 3.13.15 > environments/colab-2026-08.txt

torch is the exception: every set here uses the local CPU build, torch 2.13.0 (Colab's is a CUDA build).
A package of ``PACKAGES`` that the freeze lacks is left to pip, and said so in the file; so is setuptools, whose
version goes with torch's (torch 2.13 needs 77 or later).
"""
from __future__ import annotations

import argparse
import re
import sys

SOURCE = "https://github.com/googlecolab/backend-info"
TORCH_HERE = "2.13.0"
# The notebooks' packages and their dependencies (measured: `pip freeze` of an environment that runs both
# notebooks). A new dependency of a newer transformers is installed by pip at whatever version it picks: add it
# here to pin it to Colab's.
PACKAGES = """
accelerate aiohappyeyeballs aiohttp aiosignal annotated-doc annotated-types anyio attrs backcall certifi
charset-normalizer click cloudpickle contourpy cycler datasets debugpy decorator dill entrypoints filelock
fonttools frozenlist fsspec h11 hf-xet httpcore httpx huggingface-hub idna ipykernel ipython jedi jinja2 joblib
jupyter-client jupyter-core kiwisolver markdown-it-py markupsafe matplotlib matplotlib-inline mdurl mpmath
multidict multiprocess nest-asyncio networkx numpy packaging pandas parso peft pexpect pickleshare pillow
platformdirs prompt-toolkit propcache psutil ptyprocess pyarrow pydantic pydantic-core pygments pyparsing
python-dateutil pytz pyyaml pyzmq regex requests rich safetensors scikit-learn scipy setuptools shellingham six
sympy threadpoolctl tokenizers torch tornado tqdm traitlets transformers typer typing-extensions
typing-inspection tzdata urllib3 wcwidth xxhash yarl
""".split()


WITH_TORCH = {"setuptools"}   # versions that follow torch's requirements, not Colab's


def normalized(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_freeze(text: str) -> dict[str, tuple[str, str]]:
    """normalized name -> (name as Colab spells it, version) of each ``name==version`` line."""
    pins = {}
    for line in text.splitlines():
        match = re.match(r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)==([^\s;#]+)", line.strip())
        if match:
            pins[normalized(match[1])] = (match[1], match[2])
    return pins


def requirements(freeze: dict[str, tuple[str, str]], header: list[str]) -> str:
    lines = [f"# {line}" if line else "#" for line in header]
    for package in sorted(PACKAGES):
        name, version = freeze.get(package, (package, None))
        if package == "torch":
            lines.append(f"torch=={TORCH_HERE}    # Colab: {version}; here the local CPU build")
        elif package in WITH_TORCH:
            lines.append(f"{package}    # Colab: {version}, which goes with its torch: pip's choice")
        elif version is None:
            lines.append(f"{package}    # not in Colab's list: pip's choice")
        else:
            lines.append(f"{name}=={version}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("freeze", type=argparse.FileType("r", encoding="utf-8"), help="Colab's pip-freeze.gpu.txt")
    parser.add_argument("--runtime", required=True, help='e.g. "current runtime" or "pinned runtime 2026.01"')
    parser.add_argument("--date", required=True, help="the commit's date, YYYY-MM-DD")
    parser.add_argument("--commit", required=True, help="the backend-info commit the freeze comes from")
    parser.add_argument("--python", required=True, help="Colab's Python there (os-info-gpu.txt)")
    args = parser.parse_args(argv)
    freeze = read_freeze(args.freeze.read())
    header = [f"Colab's {args.runtime}, as published on {args.date}: pip-freeze.gpu.txt of {SOURCE}",
              f"at commit {args.commit}, the packages the notebooks run on (written by environments/colab_pins.py).",
              f"Colab runs them on Python {args.python} with torch {freeze.get('torch', ('', '?'))[1]};"
              f" here they run on this machine's Python (3.11) with the local CPU build of torch {TORCH_HERE}.",
              ""]
    sys.stdout.write(requirements(freeze, header))
    return 0


if __name__ == "__main__":
    sys.exit(main())
