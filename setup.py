"""The build steps pyproject.toml cannot declare.

- The logprob reader's C loop (guardrails/logprobs/_accel.c). The extension is optional: where no C compiler is
  at hand the install still succeeds and the logprob reader takes its pure-Python general path (slower, same
  results).
- Repository files an installed service reads, copied into the built packages: samples/*.json into `api/samples/`
  (one OpenAPI example per format) and the whole policies/ tree into `guardrails/policies/` (the default policy
  when the working directory has no ./policies). The repository keeps the only copy; an editable install reads
  it in place.

Everything else is declared in pyproject.toml.
"""

import shutil
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
# (repository folder, which of its files, where they go in the built tree): api/app.py's SAMPLES_DIR and
# guardrails/config.py's INSTALLED_POLICIES look there first.
PACKAGED_COPIES = (
    ("samples", "*.json", ("api", "samples")),
    ("policies", "**/*", ("guardrails", "policies")),
)


def files_to_copy(source: Path, pattern: str) -> list[Path]:
    """The files under `source` matching `pattern`, without the bytecode a local run leaves beside actions.py."""
    return sorted(path for path in source.glob(pattern)
                  if path.is_file() and "__pycache__" not in path.relative_to(source).parts
                  and path.suffix not in {".pyc", ".pyo"})


class BuildPyWithRepositoryFiles(build_py):
    def run(self) -> None:
        super().run()
        if not self.editable_mode:
            for folder, pattern, target in PACKAGED_COPIES:
                self.copy_repository_files(ROOT / folder, pattern, Path(self.build_lib, *target))

    def copy_repository_files(self, source: Path, pattern: str, target: Path) -> None:
        files = files_to_copy(source, pattern)
        if not files:  # a wheel without them would quietly lose its OpenAPI examples or its default policy
            raise FileNotFoundError(f"no {pattern} under {source}: the sdist must include them (MANIFEST.in)")
        shutil.rmtree(target, ignore_errors=True)  # build/ is reused: a file removed from the repository must go too
        for path in files:
            destination = target / path.relative_to(source)
            destination.parent.mkdir(parents=True, exist_ok=True)  # not mkpath: it caches what rmtree removed
            self.copy_file(str(path), str(destination))


setup(
    ext_modules=[Extension("guardrails.logprobs._accel", ["guardrails/logprobs/_accel.c"], optional=True)],
    cmdclass={"build_py": BuildPyWithRepositoryFiles},
)
