"""The model tests run single-threaded: on a shared 2-core machine, intra-op threads that wait on busy
cores made small convolutions up to 10x slower than one thread does."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True, scope="package")
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
