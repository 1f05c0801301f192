"""A workflow as a standalone SVG: layers left to right, boxes with id and type, curved links
labelled with output names (long ones routed between the boxes they pass), nodes coloured by
their status in a run report when one is given."""

from __future__ import annotations

from xml.sax.saxutils import escape

from sdflow.draw.layout import Drawing, is_waypoint

CHAR_WIDTH = 7.0  # of the 12 px monospace font, for sizing boxes without measuring text
BOX_HEIGHT = 40
WAYPOINT_HEIGHT = 14
PADDING = 12
LAYER_GAP = 165  # room for the link labels between layers
ROW_GAP = 22
MARGIN = 20
LINE = "#868e96"
FILLS = {"ran": ("#ffe8cc", "#e8590c"), "cached": ("#d3f9d8", "#2f9e44"), None: ("#f1f3f5", "#495057")}


def to_svg(picture: Drawing) -> str:
    """The SVG document text."""
    widths = {n: _box_width(n, picture.types.get(n, "")) for layer in picture.layers for n in layer}
    heights = [sum(_height(n) + ROW_GAP for n in layer) - ROW_GAP for layer in picture.layers]
    tallest = max(heights, default=0)
    places: dict[str, tuple[float, float, float]] = {}  # node -> left, top, width of its layer
    x = MARGIN
    for layer, height in zip(picture.layers, heights, strict=True):
        layer_width = max(widths[n] for n in layer)
        y = MARGIN + (tallest - height) / 2
        for node in layer:
            places[node] = (x, y, layer_width)
            y += _height(node) + ROW_GAP
        x += layer_width + LAYER_GAP
    legend = 34 if picture.status else 0
    width, height = x - LAYER_GAP + MARGIN, tallest + 2 * MARGIN + legend
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {width:.0f} {height:.0f}" font-family="monospace" font-size="12">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='10' refY='5' markerWidth='7' "
        f"markerHeight='7' orient='auto'><path d='M0,0 L10,5 L0,10 z' fill='{LINE}'/></marker></defs>",
        f'<rect width="{width:.0f}" height="{height:.0f}" fill="white"/>',
    ]
    labels = []
    for edge in picture.edges:
        left, top, _ = places[edge.source]
        start = (left + widths[edge.source], top + BOX_HEIGHT / 2)
        path, point = f"M{start[0]:.1f},{start[1]:.1f}", start
        for waypoint in edge.waypoints:  # cross the layer in a straight line between its boxes
            wx, wy, layer_width = places[waypoint]
            y = wy + WAYPOINT_HEIGHT / 2
            path += _curve(point, (wx, y)) + f" L{wx + layer_width:.1f},{y:.1f}"
            point = (wx + layer_width, y)
        tx, ty, _ = places[edge.target]
        end = (tx, ty + BOX_HEIGHT / 2)
        path += _curve(point, end)
        parts.append(
            f'<path d="{path}" fill="none" stroke="{LINE}" stroke-width="1.2" marker-end="url(#arrow)"/>'
        )
        if edge.waypoints:  # on the first straight stretch, away from the crowd at the source
            wx, wy, layer_width = places[edge.waypoints[0]]
            at = (wx + layer_width / 2, wy + WAYPOINT_HEIGHT / 2 - 3)
        else:
            at = ((start[0] + end[0]) / 2, (start[1] + end[1]) / 2 - 3)
        labels.append(
            f'<text x="{at[0]:.1f}" y="{at[1]:.1f}" '
            'text-anchor="middle" font-size="10" fill="#495057" stroke="white" stroke-width="3" '
            f'paint-order="stroke">{escape(edge.label)}</text>'
        )
    parts += labels  # above every line
    for node in picture.nodes():
        left, top, _ = places[node]
        fill, stroke = FILLS.get(picture.status.get(node), FILLS[None])
        kind = escape(picture.types[node])
        parts += [
            f"<g><title>{escape(node)}: {kind}</title>",
            f'<rect x="{left:.1f}" y="{top:.1f}" width="{widths[node]:.1f}" height="{BOX_HEIGHT}" rx="6" '
            f'fill="{fill}" stroke="{stroke}"/>',
            f'<text x="{left + PADDING:.1f}" y="{top + 17:.1f}" font-weight="bold">{escape(node)}</text>',
            f'<text x="{left + PADDING:.1f}" y="{top + 32:.1f}" fill="#495057">{kind}</text></g>',
        ]
    if picture.status:
        parts.append(_legend(height - MARGIN - 14))
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _curve(start: tuple[float, float], end: tuple[float, float]) -> str:
    bend = max(30.0, (end[0] - start[0]) / 2)
    return (
        f" C{start[0] + bend:.1f},{start[1]:.1f} {end[0] - bend:.1f},{end[1]:.1f} {end[0]:.1f},{end[1]:.1f}"
    )


def _height(node: str) -> float:
    return WAYPOINT_HEIGHT if is_waypoint(node) else BOX_HEIGHT


def _box_width(node: str, type_name: str) -> float:
    if is_waypoint(node):
        return 0.0
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
