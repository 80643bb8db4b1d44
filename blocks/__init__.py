"""Candidate blocks, search spaces, the super-net and derived networks."""

from blocks import fbnet  # noqa: F401  (registers FBNet's 9 blocks and the 'fbnet' block set)
from blocks import mbconv  # noqa: F401  (registers MBConv blocks, 'identity' and the 'proxyless' block set)
from blocks.registry import BLOCK_SETS, BLOCKS, BlockSpec, create_block, register_block, resolve_block_set
from blocks.space import SPACES, LayerShape, SearchSpace, Stage, build_part, resolve_space

__all__ = [
    "BLOCKS", "BLOCK_SETS", "BlockSpec", "create_block", "register_block", "resolve_block_set",
    "SPACES", "LayerShape", "SearchSpace", "Stage", "build_part", "resolve_space",
]
