import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    # The solvers run many small matrix ops; thread hand-offs dominate on a shared 2-core box.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def gen():
    return torch.Generator().manual_seed(0)
