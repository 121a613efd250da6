"""Structured (channel) pruning: physically smaller models ranked by channel path mass, cut by
Torch-Pruning's dependency graph, and certified exactly against their zeroed twin."""
