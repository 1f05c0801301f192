"""Exchange with other tools: ComfyUI workflows in, A1111 generation parameters out."""
