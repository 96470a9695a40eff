"""One torch thread for tiny-model tests that run many small passes: on the shared 2-core
machine two threads made each tiny forward ~10x slower, and tiny models gain nothing from a
second thread. Conftests re-export `one_thread` as an autouse fixture."""

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
