import pytest
import torch


@pytest.fixture(scope="package")
def planted():
    """`tests.helpers.planted_report()`, computed once for the report tests."""
    from tests.helpers import planted_report

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return planted_report()
    finally:
        torch.set_num_threads(threads)
