"""A module-scoped autouse fixture; import it into a test module to run that module's torch code on one thread."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models gain nothing from a second thread, and on a busy 2-core machine OpenMP's thread barriers make
    every op ~50x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
