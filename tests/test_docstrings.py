"""Docstring examples are real: run them."""
import doctest
import importlib

import pytest

MODULES = ["resnetkit.models.resnet", "resnetkit.models.d2l", "resnetkit.blocks.d2l", "resnetkit.models.mobilenetv2",
           "resnetkit.models.ghostnet", "resnetkit.models.cifar", "resnetkit.blocks.inverted", "resnetkit.blocks.ghost",
           "resnetkit.blocks.shortcut", "resnetkit.inspect.summary", "resnetkit.tables.build",
           "resnetkit.weights", "resnetkit.detection", "resnetkit.models.mmdet", "resnetkit.blocks.norm"]


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples_run(module):
    result = doctest.testmod(importlib.import_module(module), optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0
