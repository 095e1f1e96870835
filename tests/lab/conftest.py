"""Shared by the lab's tests."""

from __future__ import annotations

import pytest
import torch

from trainlab.lab.experiment import run


@pytest.fixture(scope="module")
def first_run(request, tmp_path_factory):
    """The test module's experiment (its ``NAME``) run once in quick mode: (folder, results)."""
    out = tmp_path_factory.mktemp("lab")
    threads = torch.get_num_threads()
    results = run(request.module.NAME, out, quick=True)
    assert torch.get_num_threads() == threads  # the experiment's single thread is undone
    return out, results
