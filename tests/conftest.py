import pytest


@pytest.fixture(scope="session")
def tiny_bench():
    """The tiny SIMULATED benchmark (cached on disk under .cache/simulated after the first build)."""
    from clustermine_lib.simulate import make_benchmark

    return make_benchmark("tiny", seed=0)
