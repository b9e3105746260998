"""Shared fixtures: one real local Ray per test session (2 CPUs, like the smallest machine) and ../shared data."""
from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture(scope="session")
def ray_session():
    """A real local Ray with 2 CPUs, started once for the whole session."""
    from facepipe.runtime import init_ray

    import ray

    init_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def shared_file(relative: str) -> Path:
    """A file under ../shared/data, or skip the test cleanly when it is absent."""
    path = SHARED / relative
    if not path.exists():
        pytest.skip(f"real data not available: {path}")
    return path
