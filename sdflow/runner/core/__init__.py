"""The runner's core: one Runner, its step executor, caches, keys, events and the run report."""
