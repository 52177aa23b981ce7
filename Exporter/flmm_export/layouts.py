"""Attention layouts: how a sample's K image columns (in sequence order) fill the grid maps.

Mirrors FLMM's AttentionLayouts.swift.  A segment places columns into one map:
``map[r0 + i, c0 + j] = col[start + i * row_stride + j]``.

* deepseek_vl, llava: one g_h x g_w map, one segment (K = g_h * g_w).
* llava_next: ``[coarse g x g][fine Hf rows of (Wf + 1)]`` -- map 0 the coarse grid, map 1
  the fine grid with row stride Wf + 1 (the newline column of each row is in no map).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Segment:
    map: int
    start: int
    rows: int
    cols: int
    row_stride: int
    r0: int = 0
    c0: int = 0


@dataclass(frozen=True)
class Layout:
    kind: str
    name: str
    maps: tuple            # ((h, w), ...)
    segments: tuple        # (Segment, ...)
    image_token_count: int


def single(kind: str, title: str, gh: int, gw: int) -> Layout:
    return Layout(kind, f"{title} {gh}×{gw}", ((gh, gw),), (Segment(0, 0, gh, gw, gw),), gh * gw)


def llava_next(ch: int, cw: int, fh: int, fw: int) -> Layout:
    return Layout("llava_next", f"LLaVA-NeXT {ch}×{cw} + {fh}×{fw}", ((ch, cw), (fh, fw)),
                  (Segment(0, 0, ch, cw, cw), Segment(1, ch * cw, fh, fw, fw + 1)), ch * cw + fh * (fw + 1))


def cell_columns(layout: Layout) -> list[list[list[int]]]:
    """For each map, for each cell, the list of columns placed there (tiling check: each has one)."""
    cells = [[[[] for _ in range(w)] for _ in range(h)] for h, w in layout.maps]
    for s in layout.segments:
        for i in range(s.rows):
            for j in range(s.cols):
                cells[s.map][s.r0 + i][s.c0 + j].append(s.start + i * s.row_stride + j)
    return cells
