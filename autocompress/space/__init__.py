"""The joint compression space (from YAML) and its points, Candidates."""

from autocompress.space.candidate import DIMENSIONS, IDENTITY, Candidate, CandidateError
from autocompress.space.search_space import LayerConfig, SearchSpace, full_rank, rank_for
from autocompress.space.spec import SpaceError, SpaceSpec, read_spec

__all__ = [
    "DIMENSIONS", "IDENTITY", "Candidate", "CandidateError", "LayerConfig", "SearchSpace", "SpaceError",
    "SpaceSpec", "full_rank", "rank_for", "read_spec",
]
