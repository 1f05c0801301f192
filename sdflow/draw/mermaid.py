"""A workflow as a Mermaid flowchart (GitHub and many editors render it; no dependency)."""

from __future__ import annotations

from sdflow.draw.layout import Drawing

STYLES = {
    "ran": "fill:#ffe8cc,stroke:#e8590c",
    "cached": "fill:#d3f9d8,stroke:#2f9e44",
}


def to_mermaid(picture: Drawing) -> str:
    """Mermaid text: one box per node (id and type), one labelled arrow per link."""
    names = {node: f"n{i}" for i, node in enumerate(picture.nodes())}
    lines = ["flowchart LR"]
    for node, name in names.items():
        lines.append(f'  {name}["{_escape(node)}<br/><small>{_escape(picture.types[node])}</small>"]')
    for edge in picture.edges:
        lines.append(f'  {names[edge.source]} -- "{_escape(edge.label)}" --> {names[edge.target]}')
    for status, style in STYLES.items():
        members = [names[n] for n, s in picture.status.items() if s == status and n in names]
        if members:
            lines.append(f"  classDef {status} {style}")
            lines.append(f"  class {','.join(members)} {status}")
    return "\n".join(lines) + "\n"


def _escape(text: str) -> str:
    return text.replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")
