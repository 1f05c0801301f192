"""Helpers the node library shares: samplers, schedule windows, tiling, pixels, batching, placement."""
