"""Golden-image regression checks: record a workflow's images once, then check later runs against them."""
