"""Makes the built `cohort` package importable for the tests.

`make test` sets PYTHONPATH to <build>/python; without it (a developer running pytest by hand)
the first of build/python and build-*/python that holds a built extension is used. (No COHORT_*
variable for this: cohort warns about COHORT_* names it does not know.)
"""
import glob
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _candidates():
    yield os.path.join(ROOT, "build", "python")
    yield from sorted(glob.glob(os.path.join(ROOT, "build-*", "python")))


def _find_package():
    if "PYTHONPATH" in os.environ:
        return  # make test points at its build; an explicit path wins
    # A build in this tree wins over an installed copy, which may be older.
    for path in _candidates():
        if glob.glob(os.path.join(path, "cohort", "_C*.so")):
            sys.path.insert(0, path)
            return


_find_package()
