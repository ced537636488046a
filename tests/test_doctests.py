"""The docstrings' examples run and print what they show (python -m doctest on every module).

``pairflow.data.tvmnist`` is left out where torchvision is not installed (an optional extra).
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil

import pytest

import pairflow

MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(pairflow.__path__, prefix="pairflow.")
    if not (
        info.name == "pairflow.data.tvmnist" and importlib.util.find_spec("torchvision") is None
    )
    and not info.name.endswith("__main__")
)


def test_every_module_is_collected():
    assert len(MODULES) > 60 and "pairflow.flows.mixture" in MODULES


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples failed in {name}"
