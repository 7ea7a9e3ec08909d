"""Image statistics: uint8 [N, H, W, 3] -> float64 [N]. The reward-hacking monitor logs them, and the biased proxy
rewards add ``saturation`` to their score (a global bias that a policy can climb without drawing better)."""

from __future__ import annotations

import numpy as np

EDGE_THRESHOLD = 40.0  # RGB distance (0..255 units) between neighbours that makes an edge; palette colours are >= 118 apart
ENTROPY_LEVELS = 4  # colour entropy histogram: 4 levels per channel = 64 bins (at most 6 bits)



def _rgb(images: np.ndarray) -> np.ndarray:
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise ValueError(f"images must be uint8 [N, H, W, 3], got {images.dtype} {list(images.shape)}")
    return images.astype(np.float64)


def saturation(images: np.ndarray) -> np.ndarray:
    """Mean HSV saturation ``(max - min) / max`` over pixels (0 where max is 0), in [0, 1].

    The ShapesWorld background (grey) and white score 0, the palette's colours 0.79-0.92, pure red 1. It is the
    bias feature of ``toy_biased`` and of ``toy_pref``'s labels: HPS-like preference models favour saturated
    images, and more (or larger, or more vivid) coloured area raises it whatever the prompt asks.
    """
    x = _rgb(images)
    mx, mn = x.max(-1), x.min(-1)
    s = np.divide(mx - mn, mx, out=np.zeros_like(mx), where=mx > 0)
    return s.mean(axis=(1, 2))


def brightness(images: np.ndarray) -> np.ndarray:
    """Mean Rec. 601 luma ``(0.299 R + 0.587 G + 0.114 B) / 255`` over pixels, in [0, 1]."""
    x = _rgb(images)
    return (x @ np.array([0.299, 0.587, 0.114])).mean(axis=(1, 2)) / 255.0


def colour_entropy(images: np.ndarray, levels: int = ENTROPY_LEVELS) -> np.ndarray:
    """Shannon entropy (bits) of each image's colour histogram, every channel quantised to ``levels`` levels.

    One flat colour gives 0; two colours in equal areas give 1 bit; the maximum is ``3 log2(levels)``.
    """
    q = (np.asarray(images).astype(np.int64) * levels) // 256  # [N, H, W, 3] in 0..levels-1
    codes = (q[..., 0] * levels + q[..., 1]) * levels + q[..., 2]  # [N, H, W]
    out = np.empty(len(codes))
    for i, c in enumerate(codes.reshape(len(codes), -1)):
        p = np.bincount(c, minlength=levels**3) / c.size
        p = p[p > 0]
        out[i] = float(-(p * np.log2(p)).sum()) + 0.0  # + 0.0: no -0.0 for a flat image
    return out


def edge_density(images: np.ndarray, threshold: float = EDGE_THRESHOLD) -> np.ndarray:
    """Fraction of pixels whose RGB distance to the right or to the lower neighbour exceeds ``threshold``.

    Pixels of the last column (row) have no right (lower) neighbour. A 32x32 image, black left half and white
    right half, has one edge column: 32 / 1024 = 1/32.
    """
    x = _rgb(images)
    edge = np.zeros(x.shape[:3], dtype=bool)
    edge[:, :, :-1] |= np.linalg.norm(x[:, :, 1:] - x[:, :, :-1], axis=-1) > threshold
    edge[:, :-1, :] |= np.linalg.norm(x[:, 1:] - x[:, :-1], axis=-1) > threshold
    return edge.mean(axis=(1, 2))


def image_stats(images: np.ndarray) -> dict[str, float]:
    """The four statistics, each averaged over the images."""
    return {"saturation": float(saturation(images).mean()), "brightness": float(brightness(images).mean()),
            "colour_entropy": float(colour_entropy(images).mean()), "edge_density": float(edge_density(images).mean())}
