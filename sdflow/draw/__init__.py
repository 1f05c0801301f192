"""Pictures of workflows: Mermaid text and a small layered SVG."""
