"""A workflow as a standalone SVG: layers left to right, boxes with id and type, curved labelled
links; nodes coloured by their status in a run report when one is given."""

from __future__ import annotations

from xml.sax.saxutils import escape

from sdflow.draw.layout import Drawing

CHAR_WIDTH = 7.0  # of the 12 px monospace font, for sizing boxes without measuring text
BOX_HEIGHT = 40
PADDING = 12
LAYER_GAP = 120  # room for the link labels between layers
ROW_GAP = 26
MARGIN = 20
FILLS = {"ran": ("#ffe8cc", "#e8590c"), "cached": ("#d3f9d8", "#2f9e44"), None: ("#f1f3f5", "#495057")}


def to_svg(picture: Drawing) -> str:
    """The SVG document text."""
    widths = {n: _box_width(n, picture.types[n]) for layer in picture.layers for n in layer}
    heights = [len(layer) * (BOX_HEIGHT + ROW_GAP) - ROW_GAP for layer in picture.layers]
    tallest = max(heights, default=0)
    places: dict[str, tuple[float, float]] = {}  # node -> top-left corner
    x = MARGIN
    for layer, height in zip(picture.layers, heights, strict=True):
        y = MARGIN + (tallest - height) / 2
        for node in layer:
            places[node] = (x, y)
            y += BOX_HEIGHT + ROW_GAP
        x += max(widths[n] for n in layer) + LAYER_GAP
    legend = 30 if picture.status else 0
    width = x - LAYER_GAP + MARGIN
    height = tallest + 2 * MARGIN + legend
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        "markerHeight='7' orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='#868e96'/></marker></defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
    ]
    for edge in picture.edges:
        sx, sy = places[edge.source]
        tx, ty = places[edge.target]
        x1, y1 = sx + widths[edge.source], sy + BOX_HEIGHT / 2
        x2, y2 = tx, ty + BOX_HEIGHT / 2
        bend = max(40.0, (x2 - x1) / 2)
        curve = f"M{x1:.1f},{y1:.1f} C{x1 + bend:.1f},{y1:.1f} {x2 - bend:.1f},{y2:.1f} {x2:.1f},{y2:.1f}"
        parts.append(
            f'<path d="{curve}" fill="none" stroke="#868e96" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
    for edge in picture.edges:  # labels above every line
        sx, sy = places[edge.source]
        tx, ty = places[edge.target]
        mx = (sx + widths[edge.source] + tx) / 2
        my = (sy + ty) / 2 + BOX_HEIGHT / 2 - 3
        parts.append(
            f'<text x="{mx:.1f}" y="{my:.1f}" text-anchor="middle" font-size="10" fill="#495057" '
            f'stroke="white" stroke-width="3" paint-order="stroke">{escape(edge.label)}</text>'
        )
    for node, (nx_, ny) in places.items():
        fill, stroke = FILLS.get(picture.status.get(node), FILLS[None])
        parts += [
            f"<g><title>{escape(node)}: {escape(picture.types[node])}</title>"
            f'<rect x="{nx_:.1f}" y="{ny:.1f}" width="{widths[node]:.1f}" height="{BOX_HEIGHT}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"/>',
            f'<text x="{nx_ + PADDING:.1f}" y="{ny + 17:.1f}" font-weight="bold">{escape(node)}</text>',
            f'<text x="{nx_ + PADDING:.1f}" y="{ny + 32:.1f}" fill="#495057">',
            f"{escape(picture.types[node])}</text>",
            "</g>",
        ]
    if picture.status:
        parts.append(_legend(height - MARGIN - 12))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _box_width(node: str, type_name: str) -> float:
    return max(len(node), len(type_name)) * CHAR_WIDTH + 2 * PADDING


def _legend(y: float) -> str:
    items = []
    x = MARGIN
    for status in ("ran", "cached", None):
        fill, stroke = FILLS[status]
        items.append(f'<rect x="{x}" y="{y}" width="14" height="14" rx="3" fill="{fill}" stroke="{stroke}"/>')
        items.append(f'<text x="{x + 20}" y="{y + 11}">{status or "not run"}</text>')
        x += 100
    return "\n".join(items)
