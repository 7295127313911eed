"""The pytest fixture numba-cuda's tests ask for, which lives in the conftest.py of numba-cuda's
repository and is not in its wheel: `CUDATestCase` is marked
`@pytest.mark.usefixtures("initialize_from_pytest_config")`, so without it every test of such a
class errors at setup. Load with `-p numba_cuda_fixtures`."""
import pytest


def pytest_addoption(parser):
    parser.addoption(
        "--dump-failed-filechecks",
        action="store_true",
        help="Dump reproducers for FileCheck tests that fail.",
    )


@pytest.fixture(scope="class")
def initialize_from_pytest_config(request):
    request.cls._dump_failed_filechecks = request.config.getoption(
        "dump_failed_filechecks"
    )
