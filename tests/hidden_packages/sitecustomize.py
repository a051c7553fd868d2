"""Put first on PYTHONPATH by tests/test_optional_packages.py: the modules named in
DBSI_HIDDEN_PACKAGES (comma-separated) cannot be imported in this interpreter, nor in any Python
process it starts with the same environment, as on a machine that lacks them. ``import``
raises ModuleNotFoundError and ``importlib.util.find_spec`` answers None, as for a module that
was never installed."""

import os
import sys

for _name in filter(None, os.environ.get("DBSI_HIDDEN_PACKAGES", "").split(",")):
    sys.modules[_name] = None
