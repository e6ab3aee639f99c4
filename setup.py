"""The one compiled piece: the logprob reader's C loop (guardrails/logprobs/_accel.c).

Everything else is declared in pyproject.toml. The extension is optional: where no C compiler is at hand the
install still succeeds and the logprob reader takes its pure-Python general path (slower, same results).
"""

from setuptools import Extension, setup

setup(ext_modules=[Extension("guardrails.logprobs._accel", ["guardrails/logprobs/_accel.c"], optional=True)])
