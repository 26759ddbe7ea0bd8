"""Lineage between images: an image's ancestors and descendants through
``imagen.image_parents``, as the tree ``imagen lineage ID`` prints."""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

MAX_DEPTH = 50
"""Deepest a printed tree goes (a lineage is far shallower; this bounds a bad table)."""


@dataclass
class LineageNode:
    """One image in a lineage tree, with how it relates to the node above it."""

    image_id: int | None
    sha256: str
    prompt: str | None
    path: str | None
    relation: str = ""
    """``source 1``, ``mask``: what this image was to the child (or the child to it)."""
    branches: list[LineageNode] = field(default_factory=list)


def _image(conn: psycopg.Connection, image_id: int) -> tuple[str, str, str | None] | None:
    row = conn.execute(
        "SELECT sha256, prompt, metadata->>'local_path' FROM imagen.images WHERE id = %s",
        (image_id,),
    ).fetchone()
    return (str(row[0]), str(row[1]), row[2]) if row else None


def _relation(role: str, position: int) -> str:
    return "mask" if role == "mask" else f"source {position + 1}"


def _ancestors(conn: psycopg.Connection, node: LineageNode, seen: set[int], depth: int) -> None:
    if node.image_id is None or depth >= MAX_DEPTH:
        return
    rows = conn.execute(
        """
        SELECT p.parent_id, p.sha256, p.role, p.position, p.origin, i.prompt,
               i.metadata->>'local_path'
          FROM imagen.image_parents p LEFT JOIN imagen.images i ON i.id = p.parent_id
         WHERE p.child_id = %s ORDER BY p.role DESC, p.position
        """,
        (node.image_id,),
    ).fetchall()
    for parent_id, sha256, role, position, origin, prompt, path in rows:
        parent = LineageNode(parent_id, sha256, prompt, path or origin, _relation(role, position))
        node.branches.append(parent)
        if parent_id is not None and parent_id not in seen:
            _ancestors(conn, parent, seen | {parent_id}, depth + 1)


def _descendants(conn: psycopg.Connection, node: LineageNode, seen: set[int], depth: int) -> None:
    if node.image_id is None or depth >= MAX_DEPTH:
        return
    rows = conn.execute(
        """
        SELECT p.child_id, i.sha256, p.role, p.position, i.prompt, i.metadata->>'local_path'
          FROM imagen.image_parents p JOIN imagen.images i ON i.id = p.child_id
         WHERE p.parent_id = %s ORDER BY p.child_id, p.role DESC, p.position
        """,
        (node.image_id,),
    ).fetchall()
    for child_id, sha256, role, position, prompt, path in rows:
        child = LineageNode(child_id, sha256, prompt, path, f"as {_relation(role, position)}")
        node.branches.append(child)
        if child_id not in seen:
            _descendants(conn, child, seen | {child_id}, depth + 1)


def lineage(conn: psycopg.Connection, image_id: int) -> tuple[LineageNode, LineageNode] | None:
    """Two trees rooted at the image: its ancestors, its descendants; None if no such row."""
    found = _image(conn, image_id)
    if found is None:
        return None
    sha256, prompt, path = found
    up = LineageNode(image_id, sha256, prompt, path)
    down = LineageNode(image_id, sha256, prompt, path)
    _ancestors(conn, up, {image_id}, 0)
    _descendants(conn, down, {image_id}, 0)
    return up, down


def describe(node: LineageNode) -> str:
    """``image 12 "a cat at dusk" sha256 1a2b3c4d5e6f /out/cat.png``."""
    name = f"image {node.image_id}" if node.image_id is not None else "file"
    prompt = f' "{node.prompt[:60]}"' if node.prompt else ""
    where = f" {node.path}" if node.path else ""
    relation = f"{node.relation}: " if node.relation else ""
    return f"{relation}{name}{prompt} sha256 {node.sha256[:12]}{where}"


def tree_lines(node: LineageNode, prefix: str = "") -> list[str]:
    """The branches below ``node`` as indented lines with box-drawing connectors."""
    lines = []
    for number, branch in enumerate(node.branches):
        last = number == len(node.branches) - 1
        lines.append(f"{prefix}{'└─ ' if last else '├─ '}{describe(branch)}")
        lines.extend(tree_lines(branch, prefix + ("   " if last else "│  ")))
    return lines


def format_lineage(up: LineageNode, down: LineageNode) -> str:
    """The text ``imagen lineage`` prints: the image, its ancestors, its descendants."""
    lines = [describe(up), "ancestors:"]
    lines.extend(tree_lines(up, "  ") or ["  (none: made from text)"])
    lines.append("descendants:")
    lines.extend(tree_lines(down, "  ") or ["  (none)"])
    return "\n".join(lines)
