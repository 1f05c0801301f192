"""Built-in node types, one theme per module."""
