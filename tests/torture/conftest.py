"""pytest setup for the torture suite (tests/torture/).

The scenarios drive the real build/esockd as the integration suite does,
with its fixtures (esockd, and the rest) and helpers (esockd_helpers),
loaded from tests/integration/.  Each scenario has a short form, seconds
long, that `make check` runs, and a long one (--long) that `make torture`
runs and whose figures go into RESULTS.md (torture.py, report.py).
"""
import importlib.util
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
INTEGRATION = os.path.normpath(os.path.join(HERE, "..", "integration"))
sys.path.insert(0, INTEGRATION)
sys.path.insert(0, HERE)

# The integration suite's conftest under another name: its fixtures and
# hooks become this directory's too.
_spec = importlib.util.spec_from_file_location(
    "integration_conftest", os.path.join(INTEGRATION, "conftest.py"))
_integration = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_integration)
globals().update({k: v for k, v in vars(_integration).items()
                  if not k.startswith("__") and k != "pytest_addoption"})


def pytest_addoption(parser):
    parser.addoption("--long", action="store_true", default=False,
                     help="run each scenario at full length (make torture)")
