"""Strict nbval for the lesson notebooks, loaded only when lessons/ is being run.

`pytest` (testpaths: tests lessons) and `pytest lessons/NN_x.ipynb` load this file, which
registers nbval and turns on strict checking (--nbval, the current environment's kernel, the
sanitizer next to this file); `pytest exercises` never loads it, so a student's self-grading
run does not pay about two seconds for importing Jupyter. pytest.ini's `-p no:nbval` keeps
nbval's entry point from loading it anyway. Any --nbval* flag given on the command line wins
(e.g. --nbval-lax instead of the strict default).
"""
from pathlib import Path

SANITIZE = Path(__file__).resolve().parent / "sanitize.cfg"


def pytest_addoption(parser, pluginmanager):
    import nbval.plugin  # only now: this is the import `pytest exercises` must not pay for

    if not pluginmanager.has_plugin("lessons-nbval"):
        pluginmanager.register(nbval.plugin, "lessons-nbval")  # adds the --nbval* options


def pytest_configure(config):
    option = config.option
    if not (option.nbval or option.nbval_lax):
        option.nbval = True  # strict: every stored output must match
    if not option.nbval_kernel_name:
        option.nbval_current_env = True
    if not option.nbval_sanitize_with:
        option.nbval_sanitize_with = str(SANITIZE)
