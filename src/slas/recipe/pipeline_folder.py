"""A diffusers pipeline folder (``model_index.json`` + one subfolder per component), checked before it is loaded:
the one place behind ``model.path`` of ``slas train`` and ``slas eval --model DIR``.

``check`` reads what can be checked without loading the weights: ``model_index.json`` and every other JSON file
(configs, tokenizer files, sharded-weight indexes) must parse, every component the index lists must have its
subfolder, every shard an index names must exist, and every safetensors header must describe its file exactly (a
truncated file is named with its size; slas.recipe.checkpoint.check_safetensors). ``load`` then builds the backbone;
whatever the loading libraries still refuse (a config whose values do not fit the weights, a tokenizer that does
not parse) is one ``RunError`` line naming the folder, never a traceback. Byte flips inside tensor data cannot be
seen without a checksum, which diffusers folders do not carry: they load.
"""

from __future__ import annotations

from pathlib import Path

from slas.recipe.checkpoint import RunError, check_safetensors, read_json

INDEX = "model_index.json"
_MAX_MESSAGE = 300  # characters of a loading library's message kept in the one error line


def read_index(path: Path) -> dict:
    """A pipeline folder's ``model_index.json``: a JSON object with a ``_class_name``, else a ``RunError``."""
    index = read_json(Path(path) / INDEX)
    if not isinstance(index, dict) or not isinstance(index.get("_class_name"), str):
        raise RunError(f'{Path(path) / INDEX}: not a diffusers pipeline index (a JSON object with a "_class_name"); '
                       "the file is corrupt")
    return index


def components(path: Path) -> list[str]:
    """The component subfolders to load: those ``model_index.json`` lists (``[library, class]``, not null), or every
    subfolder of a folder without an index."""
    path = Path(path)
    if not (path / INDEX).exists():
        return sorted(p.name for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    index = read_index(path)
    names = [k for k, v in index.items() if not k.startswith("_") and isinstance(v, list) and None not in v]
    for name in names:
        if not (path / name).is_dir():
            raise RunError(f"{path / name}: missing ({INDEX} lists the component {name!r})")
    return names


def check(path: Path) -> None:
    """Every check that needs no weights loaded (module docstring); a ``RunError`` names the first bad file."""
    path = Path(path)
    for name in components(path):
        for f in sorted((path / name).rglob("*")):
            if not f.is_file():
                continue
            if f.name.endswith(".safetensors"):
                check_safetensors(f)
            elif f.name.endswith(".json"):
                value = read_json(f)
                if f.name.endswith(".index.json"):  # sharded weights: {"weight_map": {tensor: shard file}}
                    shards = value.get("weight_map") if isinstance(value, dict) else None
                    if not isinstance(shards, dict) or not all(isinstance(s, str) for s in shards.values()):
                        raise RunError(f'{f}: not a sharded-weights index (it needs a "weight_map"); the file is '
                                       "corrupt")
                    for shard in sorted(set(shards.values())):
                        if not (f.parent / shard).is_file():
                            raise RunError(f"{f.parent / shard}: missing ({f.name} lists it)")


def load(adapter, model_cfg, **kwargs):
    """``adapter.from_config(model_cfg, **kwargs)`` (a ``slas.policy`` adapter class) over the checked folder
    ``model.path``: every failure of the loading libraries is one ``RunError`` naming the folder."""
    from slas.policy.common import local_dir, resolve_device

    path = Path(model_cfg.path).expanduser()
    if not (path / INDEX).is_file():  # not a folder, an empty one or an unfinished download: what to fetch
        local_dir(model_cfg.backbone, model_cfg.path)
    check(path)
    resolve_device(model_cfg.device)  # its own one-line error (no CUDA), before the catch-all below
    try:
        return adapter.from_config(model_cfg, **kwargs)
    except RunError:
        raise
    except Exception as e:  # diffusers / transformers / tokenizers / safetensors, each with its own exception types
        msg = " ".join(str(e).split()) or "no message"
        msg = msg if len(msg) <= _MAX_MESSAGE else msg[: _MAX_MESSAGE - 3] + "..."
        raise RunError(f"{path}: cannot load it as a {model_cfg.backbone!r} pipeline ({type(e).__name__}: {msg}); "
                       "the folder is incomplete or corrupt, or holds another kind of pipeline") from None
