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


@pytest.fixture(scope="module")
def browser():
    """Debian's headless chromium through Playwright (nothing is downloaded)."""
    from playwright.sync_api import sync_playwright

    from tests.helpers import chromium_path

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=["--no-sandbox"])
        yield b
        b.close()
