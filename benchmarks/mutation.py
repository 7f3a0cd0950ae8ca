"""Run mutmut 3 on one layer of flowdiff (see docs/testing.md, "Mutation testing").

mutmut reads its configuration only from pyproject.toml's [tool.mutmut]. The committed section describes
the run over the mathematical layers (`dynamics/`, `paths/`); this script swaps in the section of the
chosen run, calls mutmut with the remaining arguments and puts the committed section back afterwards:

    python benchmarks/mutation.py learning run --max-children 2
    python benchmarks/mutation.py learning results --all true
    python benchmarks/mutation.py learning show flowdiff.learning.losses.x_draw__mutmut_1

Each run keeps its mutants in `mutants/` (remove it before switching runs: `rm -rf mutants`). Run it from
the repository root, without PYTHONPATH pointing at src/ (mutmut puts mutants/src first on the path).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

SOURCE = 'source_paths = ["src/"]\n'
ADD_ARGS = 'pytest_add_cli_args = ["-p", "no:cacheprovider", "-W", "ignore::DeprecationWarning"]\n'

CONFIGS = {
    # The committed section of pyproject.toml.
    "math": '''only_mutate = ["src/flowdiff/dynamics/*", "src/flowdiff/paths/*"]
pytest_add_cli_args_test_selection = ["tests/dynamics/", "tests/paths/"]
''',
    # The learning core. The tests that train networks for many seconds (digits, guidance with a trained
    # model, trained field against the marginal, evaluation) are left out so that the run fits in minutes.
    "learning": '''only_mutate = [
    "src/flowdiff/learning/losses.py",
    "src/flowdiff/learning/predictions.py",
    "src/flowdiff/learning/guidance.py",
    "src/flowdiff/learning/likelihood.py",
    "src/flowdiff/learning/devices.py",
    "src/flowdiff/learning/sampling/*",
    "src/flowdiff/learning/training/*",
]
pytest_add_cli_args_test_selection = [
    "tests/learning/", "tests/runs/", "tests/dynamics/", "tests/paths/",
    "--ignore=tests/learning/test_image_training.py",
    "--ignore=tests/learning/test_trained_vs_marginal.py",
    "--ignore=tests/learning/test_evaluation.py",
    "--deselect=tests/learning/test_guidance.py::test_trained_model_with_guidance",
]
''',
    # The cores added after the first mutation runs: the adaptive solver, the CTMC, the discrete path and the
    # multistep samplers, against their own tests.
    "new": '''only_mutate = [
    "src/flowdiff/dynamics/adaptive.py",
    "src/flowdiff/dynamics/ctmc.py",
    "src/flowdiff/paths/discrete.py",
    "src/flowdiff/learning/sampling/multistep.py",
]
pytest_add_cli_args_test_selection = [
    "tests/dynamics/", "tests/paths/", "tests/learning/test_sampling_multistep.py",
    "tests/learning/test_discrete.py", "tests/learning/test_learning_contracts.py",
    "tests/learning/test_likelihood.py",
]
''',
    # The stable target (the batch posterior and its use by the losses), against its own tests.
    "stable": '''only_mutate = [
    "src/flowdiff/paths/empirical_posterior.py",
    "src/flowdiff/learning/stable_target.py",
]
pytest_add_cli_args_test_selection = ["tests/paths/test_empirical_posterior.py", "tests/learning/test_stable_target.py"]
''',
}

HEADER = "[tool.mutmut]\n"
COMMENT = ("# Mutation testing (docs/testing.md): `mutmut run` for dynamics/ and paths/;\n"
           "# `python benchmarks/mutation.py learning run` for the learning core.\n")


def section(name: str) -> str:
    """The [tool.mutmut] section of a run (for "math", the committed one)."""
    return (HEADER + COMMENT
            + SOURCE + CONFIGS[name] + ADD_ARGS)


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in CONFIGS:
        print(__doc__)
        print(f"runs: {', '.join(CONFIGS)}")
        return 2
    pyproject = Path("pyproject.toml")
    original = pyproject.read_text()
    start = original.index(HEADER)
    end = original.find("\n[", start + len(HEADER))
    end = len(original) if end < 0 else end + 1
    mutmut = shutil.which("mutmut") or str(Path(sys.executable).with_name("mutmut"))
    pyproject.write_text(original[:start] + section(argv[0]) + original[end:])
    try:
        return subprocess.call([mutmut, *argv[1:]])
    finally:
        pyproject.write_text(original)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
