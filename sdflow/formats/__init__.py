"""Formats shared with other tools: A1111 generation parameters, ComfyUI workflow JSON, PNG text."""
