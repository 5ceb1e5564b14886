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


@pytest.fixture(scope="session")
def synth_mini_ccd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic release: contrastChangeDetection runs of the first 2 mini subjects (seed 0).

    Returns the output folder ``OUT`` (use it as eegdash's ``cache_dir``); the BIDS
    root is ``OUT / "EEG2025r5mini"``.  Read-only: copy it before changing files.
    """
    from eegstore.synth import synthesize

    out = tmp_path_factory.mktemp("synth_mini_ccd")
    synthesize(out, subjects=2, tasks=["contrastChangeDetection"], seed=0, progress=False)
    return out
