"""The reward server's wire format, shared by the server (slas.rewards.server) and the ``remote`` client
(slas.rewards.remote): images in JSON, request ids, bearer tokens.

Images travel losslessly (PNG or raw uint8) inside JSON, so the reward sees exactly the rollout's pixels, and the
server unpickles nothing (Flow-GRPO and ddpo-pytorch send pickled JPEGs: yifan123/reward-server,
kvablack/LLaVA-server).

Protocol::

    POST /score   Content-Type: application/json, Content-Length required,
                  Authorization: Bearer <token> when the server has one,
                  X-Request-Id: <id> (optional; 1-128 of [A-Za-z0-9._:-]): a repeat of an id is answered with the
                  first answer (or waits for it) instead of being scored again
        {"images": {"encoding": "png", "data": [<base64 PNG>, ...]}
                or {"encoding": "raw", "shape": [N, H, W, 3], "data": <base64 of the uint8 bytes, C order>},
         "prompts": [str, ...],          # N
         "metas": [object, ...]}         # N, optional (default: {} each)
      -> 200 {"reward": name, "scores": [float or null, ...]}     null = a non-finite score
      -> 400 bad payload, 401 missing or wrong token, 404 unknown path, 411 no Content-Length, 413 too large,
         500 the reward raised, 503 the queue is full (Retry-After: seconds), 504 not scored within the server's
         time limit (still queued or scoring: a repeat of its id gets the result): {"error": one line}
    A reward with a ``prepare`` hook (slas.rewards.register; ShapesWorld's verifier rewards have one) gets its
    metadata filled in and checked first, as in training. What the hook refuses, and images the reward does not
    take, are a 400 (``RewardInputError``) naming what the reward needs.
    GET /health (no token needed) -> 200 {"status": "ok", "reward": name, "max_bytes": body limit,
                                          "auth": whether /score needs a token}
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import re
from pathlib import Path

import numpy as np

DEFAULT_PORT = 18100
DEFAULT_MAX_BYTES = 64 * 2**20  # request body limit
# PNG compresses, so a small body can decode to gigabytes: decoded pixels may be at most this many times
# the body limit (raw uint8 already is its own size).
DECODED_FACTOR = 16
MAX_ERROR_CHARS = 500  # an error answer is one line of at most this many characters
REQUEST_ID_HEADER = "X-Request-Id"
TOKEN_ENV = "SLAS_REWARD_TOKEN"  # where the `remote` client looks for its token when no token_file is given
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_TOKEN = re.compile(r"[\x21-\x7e]+")  # visible ASCII: what an HTTP header carries without escaping


class PayloadError(ValueError):
    """A request the server refuses; ``status`` is the HTTP status it answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def short(value: object, n: int = 80) -> str:
    """``repr(value)`` cut to ``n`` characters: a message about a client's huge value stays one short line."""
    r = repr(value)
    return r if len(r) <= n else r[: n - 3] + "..."


def one_line(message: str) -> str:
    text = " ".join(str(message).split())
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 3] + "..."


def valid_request_id(value: str) -> bool:
    return _REQUEST_ID.fullmatch(value) is not None


def check_token(token: str, where: str) -> str:
    """``token`` stripped of surrounding whitespace; ValueError naming ``where`` (a file or a variable, never the
    token's value) when it is empty or holds characters an HTTP header cannot carry."""
    token = token.strip()
    if not token:
        raise ValueError(f"{where} is empty: it must hold the bearer token")
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"{where} must hold the token on one line of visible ASCII characters, without spaces "
                         "(it travels in an HTTP header)")
    return token


def read_token(path: str | Path) -> str:
    """The bearer token in file ``path``; ValueError naming the file when it is missing, unreadable or empty."""
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"token file {p} does not exist")
    try:
        text = p.read_text(encoding="ascii")
    except (OSError, UnicodeDecodeError) as e:  # a directory, no permission, not ASCII
        reason = e.strerror if isinstance(e, OSError) and e.strerror else type(e).__name__
        raise ValueError(f"token file {p} cannot be read: {reason}") from None
    return check_token(text, f"token file {p}")


# ----------------------------------------------------------------------------
# Payload encoding
# ----------------------------------------------------------------------------


def _check_images(images: np.ndarray) -> None:
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        got = f"{images.dtype} {images.shape}" if isinstance(images, np.ndarray) else type(images).__name__
        raise ValueError(f"images must be a uint8 array [N, H, W, 3], got {got}")


def encode_images(images: np.ndarray, encoding: str = "png") -> dict:
    """uint8 [N, H, W, 3] -> the ``images`` field of a request (PNG: smaller; raw: no encoding cost)."""
    _check_images(images)
    if encoding == "raw":
        data = base64.b64encode(np.ascontiguousarray(images).tobytes()).decode("ascii")
        return {"encoding": "raw", "dtype": "uint8", "shape": list(images.shape), "data": data}
    if encoding == "png":
        from PIL import Image

        out = []
        for img in images:
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, format="PNG", compress_level=1)  # lossless either way; level 1 is fast
            out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
        return {"encoding": "png", "data": out}
    raise ValueError(f"encoding must be 'png' or 'raw', got {encoding!r}")


def _b64(s: object, what: str) -> bytes:
    if not isinstance(s, str):
        raise PayloadError(f"{what} must be a base64 string, got {type(s).__name__}")
    try:
        return base64.b64decode(s, validate=True)
    except (binascii.Error, ValueError) as e:
        raise PayloadError(f"{what} is not valid base64: {e}") from None


def decode_images(obj: object, max_decoded_bytes: int) -> np.ndarray:
    """The ``images`` field of a request -> uint8 [N, H, W, 3]; PayloadError if malformed or too large."""
    if not isinstance(obj, dict) or "encoding" not in obj or "data" not in obj:
        raise PayloadError('"images" must be {"encoding": "png" | "raw", "data": ...}')
    if obj["encoding"] == "raw":
        shape = obj.get("shape")
        if (not isinstance(shape, list) or len(shape) != 4 or shape[3] != 3
                or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            raise PayloadError(f'raw images need "shape": [N, H, W, 3] of non-negative ints, got {short(shape)}')
        if any(d >= 2**31 for d in shape):  # numpy cannot even describe an empty array with such sides
            raise PayloadError(f"raw images: shape {shape} has a side over 2**31")
        if obj.get("dtype", "uint8") != "uint8":
            raise PayloadError(f'raw images must be uint8, got dtype {short(obj["dtype"])}')
        data = _b64(obj["data"], "images.data")
        if len(data) != math.prod(shape):
            raise PayloadError(f"raw images: {len(data)} bytes do not fill shape {shape} ({math.prod(shape)} bytes)")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape).copy()
    if obj["encoding"] == "png":
        from PIL import Image, UnidentifiedImageError

        if not isinstance(obj["data"], list):
            raise PayloadError("png images: data must be a list of base64 PNG strings")
        opened, total = [], 0
        for i, s in enumerate(obj["data"]):
            try:
                img = Image.open(io.BytesIO(_b64(s, f"images.data[{i}]")))  # lazy: reads the header only
            except Image.DecompressionBombError as e:
                raise PayloadError(f"images.data[{i}] is too large to decode: {e}", status=413) from None
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:  # PIL's plugins raise all three
                raise PayloadError(f"images.data[{i}] is not an image: {e}") from None
            if img.format != "PNG" or img.mode != "RGB":
                raise PayloadError(f"images.data[{i}] must be an 8-bit RGB PNG, got {img.format} {img.mode}")
            total += img.width * img.height * 3
            if total > max_decoded_bytes:
                raise PayloadError(f"decoded images exceed {max_decoded_bytes} bytes", status=413)
            opened.append(img)
        sizes = {img.size for img in opened}
        if len(sizes) > 1:
            raise PayloadError(f"all images of a request must have one size, got {sorted(sizes)}")
        if not opened:
            return np.zeros((0, 1, 1, 3), dtype=np.uint8)
        try:
            return np.stack([np.asarray(img) for img in opened])  # [N, H, W, 3]
        except Exception as e:  # a corrupt or truncated PNG body: OSError, SyntaxError, zlib.error, ...
            raise PayloadError(f"a PNG could not be decoded: {type(e).__name__}: {e}") from None
    raise PayloadError(f'images.encoding must be "png" or "raw", got {short(obj["encoding"])}')


def parse_request(payload: object, max_decoded_bytes: int) -> tuple[np.ndarray, list[str], list[dict]]:
    """A decoded JSON request -> (images [N, H, W, 3] uint8, prompts [N], metas [N])."""
    if not isinstance(payload, dict):
        raise PayloadError("the request body must be a JSON object with images, prompts and metas")
    unknown = sorted(set(payload) - {"images", "prompts", "metas"})
    if unknown:
        raise PayloadError(f"unknown field(s) {short(unknown)}; a request has images, prompts and metas")
    if "images" not in payload or "prompts" not in payload:
        raise PayloadError('a request needs "images" and "prompts"')
    images = decode_images(payload["images"], max_decoded_bytes)
    n = len(images)
    prompts = payload["prompts"]
    if not isinstance(prompts, list) or len(prompts) != n or not all(isinstance(p, str) for p in prompts):
        raise PayloadError(f'"prompts" must be a list of {n} strings (one per image)')
    metas = payload.get("metas", [{} for _ in range(n)])
    if not isinstance(metas, list) or len(metas) != n or not all(isinstance(m, dict) for m in metas):
        raise PayloadError(f'"metas" must be a list of {n} objects (one per image)')
    return images, prompts, metas
