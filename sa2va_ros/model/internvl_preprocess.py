"""Image preparation for InternVL-format Sa2VA: dynamic tiling, normalisation, region grids.

Written with PIL + torch instead of torchvision (which does not install beside the CPU
torch wheels we use). Every step reproduces the official ``predict_forward`` exactly,
because one bicubic pixel off shifts the ViT features and can flip a greedy token:

* tiles: the closest aspect-ratio grid of 1..12 tiles of 448 px, the image resized to
  the grid with PIL's bicubic filter and cut row by row, plus a 448x448 thumbnail of the
  whole image when there is more than one tile (the settings are hard-coded in the
  official code, not read from config.json);
* video keyframes: each frame resized to 448x448 (no tiling);
* pixels: ``(x / 255 - mean) / std`` with ImageNet mean/std in float32;
* region prompts: masks resized with torch's nearest mode to the 16x16 token grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

TILE_SIZE = 448
MIN_TILES = 1
MAX_TILES = 12
USE_THUMBNAIL = True
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def candidate_grids(min_tiles: int = MIN_TILES, max_tiles: int = MAX_TILES) -> list[tuple[int, int]]:
    """All (cols, rows) grids with min..max tiles, fewest tiles first.

    Grids with the same tile count keep CPython's set iteration order, as in the official
    code; it decides rare exact ties of aspect ratio, so it is kept on purpose.
    """
    grids = {
        (cols, rows)
        for n in range(min_tiles, max_tiles + 1)
        for cols in range(1, n + 1)
        for rows in range(1, n + 1)
        if min_tiles <= cols * rows <= max_tiles
    }
    return sorted(grids, key=lambda g: g[0] * g[1])


def choose_grid(
    width: int, height: int, tile_size: int = TILE_SIZE, max_tiles: int = MAX_TILES
) -> tuple[int, int]:
    """The (cols, rows) grid whose aspect ratio is closest to the image's.

    On an exact tie the larger grid wins only if the image has more than half the pixels
    of that grid (so small images are not blown up).
    """
    aspect = width / height
    best, best_diff = (1, 1), float("inf")
    for cols, rows in candidate_grids(MIN_TILES, max_tiles):
        diff = abs(aspect - cols / rows)
        if diff < best_diff:
            best, best_diff = (cols, rows), diff
        elif diff == best_diff and width * height > 0.5 * tile_size * tile_size * cols * rows:
            best = (cols, rows)
    return best


def tile_image(
    image: Image.Image, tile_size: int = TILE_SIZE, max_tiles: int = MAX_TILES
) -> list[Image.Image]:
    """Cut ``image`` into grid tiles (row-major), plus the thumbnail when there are several."""
    cols, rows = choose_grid(image.width, image.height, tile_size, max_tiles)
    resized = image.resize((cols * tile_size, rows * tile_size), Image.Resampling.BICUBIC)
    tiles = [
        resized.crop((c * tile_size, r * tile_size, (c + 1) * tile_size, (r + 1) * tile_size))
        for r in range(rows)
        for c in range(cols)
    ]
    if USE_THUMBNAIL and len(tiles) != 1:
        tiles.append(image.resize((tile_size, tile_size), Image.Resampling.BICUBIC))
    return tiles


def normalize(images: Sequence[Image.Image]) -> torch.Tensor:
    """(n, 3, S, S) float32: ``(x / 255 - mean) / std``, the op order of ToTensor + Normalize."""
    array = np.stack([np.asarray(img.convert("RGB"), dtype=np.uint8) for img in images])
    pixels = torch.from_numpy(array).permute(0, 3, 1, 2).to(torch.float32).div(255)
    mean = torch.tensor(IMAGENET_MEAN, dtype=torch.float32)[:, None, None]
    std = torch.tensor(IMAGENET_STD, dtype=torch.float32)[:, None, None]
    return pixels.sub(mean).div(std).contiguous()


def image_pixel_values(image: np.ndarray) -> torch.Tensor:
    """Tiles of one RGB uint8 image: (n_tiles, 3, 448, 448)."""
    return normalize(tile_image(Image.fromarray(image, "RGB")))


def video_pixel_values(frames: Sequence[np.ndarray]) -> torch.Tensor:
    """Video keyframes, each resized to one 448x448 tile: (n_frames, 3, 448, 448)."""
    return normalize(
        [Image.fromarray(f, "RGB").resize((TILE_SIZE, TILE_SIZE), Image.Resampling.BICUBIC) for f in frames]
    )


def region_cells(masks: np.ndarray, grid: int) -> torch.Tensor:
    """(n, H, W) bool masks -> (n, grid, grid) bool, torch nearest resize as the official code."""
    values = torch.from_numpy(np.ascontiguousarray(masks)).to(torch.float32)
    return F.interpolate(values.unsqueeze(0), size=(grid, grid), mode="nearest").squeeze(0).bool()
