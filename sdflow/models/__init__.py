"""Model files and families: where models are found, what kind each is, and how it loads."""
