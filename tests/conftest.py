"""Shared fixtures of the eegstore test suite."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_R5 = REPO.parent / "shared" / "hbn-metadata" / "R5"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    """The repository's root folder."""
    return REPO


@pytest.fixture(scope="session")
def shared_r5() -> Path:
    """The real HBN R5 metadata beside the checkout (skips when absent)."""
    if not (SHARED_R5 / "participants.tsv").exists():
        pytest.skip(f"real R5 metadata not found at {SHARED_R5}")
    return SHARED_R5


@pytest.fixture
def tiny_store(tmp_path: Path) -> Path:
    """A 40-window schema-conformant store (4 channels x 50 samples, chunks of 8)."""
    from eegstore.testing import make_store

    return make_store(tmp_path / "tiny.zarr", n_windows=40, chunk_windows=8, n_subjects=5)
