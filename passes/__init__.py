"""Graph passes over the fxpath IR: each module holds one pure function ``Graph -> Graph``.

The order they run in, and why, is in `fxpath.passes.pipeline`.
"""
