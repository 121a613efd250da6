"""Graph passes over the fxpath IR: each module holds one pure function ``Graph -> Graph``.

The order they run in, and why, is in `fxpath.passes.pipeline`.
"""

from .check_supported import check_supported
from .eliminate_dead_nodes import eliminate_dead_nodes
from .fold_batchnorm import fold_batchnorm
from .frame_convs import frame_convs
from .lower_pooling import lower_pooling
from .pipeline import PIPELINE, normalize
from .remove_identities import remove_identities
from .rewrite_activations import rewrite_activations
from .select_outputs import select_outputs

__all__ = ["PIPELINE", "check_supported", "eliminate_dead_nodes", "fold_batchnorm",
           "frame_convs", "lower_pooling", "normalize", "remove_identities", "rewrite_activations",
           "select_outputs"]
