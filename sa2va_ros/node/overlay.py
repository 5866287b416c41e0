"""The overlay image for RViz: the frame with coloured masks, outlines, ids and labels.

Colours are a function of the object id alone, so an object keeps its colour for its whole
life and two objects next to each other rarely share a hue (golden-ratio hue spacing).
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

_GOLDEN = 0.618033988749895


@dataclass(frozen=True)
class OverlayItem:
    """What the overlay shows of one object."""

    id: int
    label: str
    mask: np.ndarray | None  # (H, W) bool
    score: float = 1.0
    lost: bool = False


def color_of(object_id: int) -> tuple[int, int, int]:
    """A bright RGB colour for an object id, stable across frames."""
    r, g, b = colorsys.hsv_to_rgb((object_id * _GOLDEN) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def render_overlay(rgb: np.ndarray, items: Sequence[OverlayItem], alpha: float = 0.5) -> np.ndarray:
    """(H, W, 3) uint8 RGB: ``rgb`` with each item's mask blended in its colour and captioned.

    Lost objects (kept for re-grounding) are captioned without a mask so the operator sees
    that they are still known.
    """
    out = rgb.copy()
    h, w = out.shape[:2]
    font = max(0.4, min(w, h) / 480.0)  # cv2 font scale: ~10 px tall text at 240 px, 20 px at 480
    thickness = 1 if font < 0.8 else 2
    captions: list[tuple[str, tuple[int, int], tuple[int, int, int]]] = []
    for item in items:
        color = color_of(item.id)
        text = f"{item.id} {item.label}".strip() + ("" if not item.lost else " (lost)")
        if item.mask is None or not item.mask.any() or item.lost:
            captions.append((text, (4, 4 + (len(captions) + 1) * int(24 * font)), color))
            continue
        mask = item.mask
        blended = (out[mask] * (1.0 - alpha) + np.array(color) * alpha).astype(np.uint8)
        out[mask] = blended
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        cv2.drawContours(out, contours, -1, color, thickness)
        ys, xs = np.nonzero(mask)
        captions.append(
            (f"{text} {item.score:.2f}", (int(xs.min()), max(int(ys.min()) - 3, int(22 * font))), color)
        )
    for text, (x, y), color in captions:
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font, thickness)
        x = min(max(0, x), max(0, w - tw))
        cv2.rectangle(out, (x, y - th - base), (x + tw, y + base // 2), (0, 0, 0), cv2.FILLED)
        cv2.putText(out, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font, color, thickness, cv2.LINE_AA)
    return out
