"""The joint compression space (from YAML), its points (Candidates) and their integer encoding."""

from autocompress.space.candidate import (
    DIMENSIONS,
    IDENTITY,
    IDENTITY_SCALING,
    Candidate,
    CandidateError,
)
from autocompress.space.encoding import Column, Encoding
from autocompress.space.search_space import LayerConfig, SearchSpace, full_rank, rank_for
from autocompress.space.spec import SpaceError, SpaceSpec, read_spec

__all__ = [
    "DIMENSIONS", "IDENTITY", "IDENTITY_SCALING", "Candidate", "CandidateError", "Column", "Encoding", "LayerConfig",
    "SearchSpace", "SpaceError", "SpaceSpec", "full_rank", "rank_for", "read_spec",
]
