import pytest


def pytest_configure(config):
    config.addinivalue_line("markers", "e2e: end-to-end runs through the Makefile (minutes; part of the normal run, "
                                       "-m 'not e2e' leaves them out)")


@pytest.fixture(scope="session")
def tiny_bench():
    """The tiny SIMULATED benchmark (cached on disk under .cache/simulated after the first build)."""
    from clustermine_lib.simulate import make_benchmark

    return make_benchmark("tiny", seed=0)
