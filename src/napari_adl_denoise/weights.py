"""Model weights: safetensors files that carry the config to rebuild the model and its card.

A weights file is a plain ``.safetensors`` file (tensors only, never pickle, so opening a
malicious file cannot run code) whose string metadata holds:

``format``
    ``"napari-adl-denoise/1"``.
``config``
    JSON of the network's config (:class:`~napari_adl_denoise.models.EfficientUnetConfig`,
    :class:`~napari_adl_denoise.models.AdaptiveCnnConfig`); its ``kind`` names the family.
``card``
    JSON model card: description, training data, noise model, steps, metrics, package version...

Bundled models live in the package's ``weights/`` folder. Your own models (fine-tuned ones, for
instance) live in :func:`user_models_dir`. :func:`list_models` lists both, and a model in either
place is loaded by name.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs
import torch
from pydantic import ValidationError
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from ._files import atomic_path
from .models import AnyConfig, Denoiser, build_model, parse_config

__all__ = [
    "LoadedModel",
    "ModelFileError",
    "delete_model",
    "export_model",
    "list_models",
    "load_model",
    "rename_model",
    "save_model",
    "user_model_path",
    "user_models_dir",
]

FORMAT = "napari-adl-denoise/1"
MODELS_ENV = "NAPARI_ADL_DENOISE_MODELS"


class ModelFileError(ValueError):
    """A weights file is missing, corrupt, or does not match its config."""


@dataclass
class LoadedModel:
    """A rebuilt network with its config, card and origin."""

    name: str
    model: Denoiser
    config: AnyConfig
    card: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


@dataclass(frozen=True)
class ModelInfo:
    """What :func:`list_models` reports about a model (read from metadata only)."""

    name: str
    path: Path
    config: AnyConfig
    card: dict[str, Any]

    @property
    def description(self) -> str:
        return str(self.card.get("description", ""))

    @property
    def bundled(self) -> bool:
        """Whether the model ships with the package (else it is a file of yours)."""
        return self.path.parent == bundled_dir()

    @property
    def data_kind(self) -> str:
        """What it denoises: ``"2D gray"``, ``"2D RGB"`` or ``"3D gray"`` (3D RGB: ``"3D RGB"``)."""
        colour = "RGB" if self.config.in_channels == 3 else "gray"
        return f"{self.config.spatial_dims}D {colour}"


def _user_model(name: str) -> Path:
    """The file of your model ``name``; ValueError (one line) for bundled or unknown names."""
    if (bundled_dir() / f"{name}.safetensors").is_file():
        raise ValueError(f"{name!r} is a bundled model: it cannot be renamed or deleted")
    path = user_model_path(name)
    if not path.is_file():
        raise ValueError(f"you have no model called {name!r} (in {user_models_dir()})")
    return path


def rename_model(name: str, new_name: str) -> Path:
    """Rename your model ``name`` (a bundled one cannot be renamed); returns its new file.

    Raises
    ------
    ValueError
        No such model of yours, a bad or bundled new name, or a model of that name exists.
    """
    path, new = _user_model(name), user_model_path(new_name)
    if new.exists():
        raise ValueError(f"a model called {new_name!r} exists already")
    path.rename(new)
    return new


def delete_model(name: str) -> None:
    """Delete your model ``name`` from :func:`user_models_dir` (bundled models stay).

    Raises
    ------
    ValueError
        No such model of yours.
    """
    _user_model(name).unlink()


def export_model(name_or_path: str | os.PathLike, destination: str | os.PathLike) -> Path:
    """Copy a model (yours or bundled, by name or path) to a ``.safetensors`` file anywhere,
    atomically; the file carries its config and card, so it loads anywhere by path.

    Raises
    ------
    ValueError
        The destination is not a ``.safetensors`` file in an existing folder.
    ModelFileError
        The model is unknown or not a valid model file.
    """
    source = model_info(name_or_path).path
    destination = Path(destination)
    if destination.suffix != ".safetensors" or not destination.parent.is_dir():
        raise ValueError(f"export to a .safetensors file in an existing folder, got {destination}")
    with atomic_path(destination) as tmp:
        shutil.copyfile(source, tmp)
    return destination


def bundled_dir() -> Path:
    return Path(str(resources.files("napari_adl_denoise") / "weights"))


def user_models_dir() -> Path:
    """The folder of your own models, listed and loaded by name like the bundled ones.

    ``$NAPARI_ADL_DENOISE_MODELS`` when set, else ``models`` in the user data folder
    (``~/.local/share/napari-adl-denoise/models`` on Linux). It may not exist yet.
    """
    env = os.environ.get(MODELS_ENV)
    return Path(env) if env else platformdirs.user_data_path("napari-adl-denoise", appauthor=False) / "models"


def user_model_path(name: str) -> Path:
    """Where a model of yours called ``name`` is saved in :func:`user_models_dir`.

    Raises
    ------
    ValueError
        ``name`` is empty, has a path separator or a suffix, or is a bundled model's name.
    """
    if not name or Path(name).name != name or Path(name).suffix or name.startswith("."):
        raise ValueError(f"a model name is a plain name without folder or suffix, got {name!r}")
    if (bundled_dir() / f"{name}.safetensors").is_file():
        raise ValueError(f"{name!r} is a bundled model's name; choose another")
    return user_models_dir() / f"{name}.safetensors"


def save_model(
    model: Denoiser,
    path: str | os.PathLike,
    card: dict[str, Any] | None = None,
    *,
    dtype: torch.dtype = torch.float32,
) -> Path:
    """Write ``model`` to a safetensors file, atomically.

    Parameters
    ----------
    model : Denoiser
        The network (an EfficientUnet, an AdaptiveCnn); its ``config`` is stored with it.
    path : path-like
        Destination, conventionally ending in ``.safetensors``.
    card : dict, optional
        Model card (JSON-serialisable): training data, noise model, metrics, ...
    dtype : torch.dtype
        Storage dtype of floating-point tensors (``torch.float16`` halves the file);
        weights are loaded back as float32.
    """
    from . import __version__

    path = Path(path)
    tensors = {
        k: (v.to(dtype) if v.is_floating_point() else v).detach().cpu().contiguous()
        for k, v in model.state_dict().items()
    }
    card = {
        **(card or {}),
        "package_version": __version__,
        "storage_dtype": str(dtype).removeprefix("torch."),
    }
    metadata = {
        "format": FORMAT,
        "config": model.config.model_dump_json(),
        "card": json.dumps(card, sort_keys=True),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return path


def _read_metadata(path: Path) -> tuple[AnyConfig, dict[str, Any]]:
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is not a valid safetensors weights file ({exc})") from None
    if metadata.get("format") != FORMAT:
        raise ModelFileError(f"{path} is not a napari-adl-denoise model (no '{FORMAT}' metadata)")
    try:
        config = parse_config(metadata["config"])
        card = json.loads(metadata.get("card", "{}"))
    except (KeyError, ValidationError, json.JSONDecodeError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise ModelFileError(f"{path} has an invalid model config: {first}") from None
    if not isinstance(card, dict):
        raise ModelFileError(
            f"{path} has an invalid model card: a JSON object is needed, got {type(card).__name__}"
        )
    stat = path.stat()
    _check_tensors(str(path), stat.st_mtime_ns, stat.st_size, metadata["config"])
    return config, card


FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")


@functools.lru_cache(maxsize=256)
def _check_tensors(path: str, mtime_ns: int, size: int, config_json: str) -> None:
    """That the file's tensors are the ones its config builds (names, shapes, float dtypes),
    from the file's header and a network built on the meta device: nothing is allocated, so a
    small file whose config asks for a huge network costs nothing. Cached per file version."""
    with torch.device("meta"):
        expected = build_model(parse_config(config_json)).state_dict()
    try:
        with safe_open(path, framework="pt") as f:
            stored = {k: (tuple(f.get_slice(k).get_shape()), f.get_slice(k).get_dtype()) for k in f.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    common = sorted(set(expected) & set(stored))
    wrong = [k for k in common if tuple(expected[k].shape) != stored[k][0]]
    dtype = [k for k in common if expected[k].is_floating_point() and stored[k][1] not in FLOAT_DTYPES]
    if missing or unexpected or wrong or dtype:
        detail = "; ".join(
            f"{label}: {', '.join(keys[:3])}{' ...' if len(keys) > 3 else ''}"
            for label, keys in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong shape", wrong),
                ("not floating point", dtype),
            )
            if keys
        )
        raise ModelFileError(f"{path} does not match its config ({detail})")


def list_models(*, user: bool = True) -> list[ModelInfo]:
    """The bundled models, then yours (:func:`user_models_dir`), each sorted by name.

    Parameters
    ----------
    user : bool
        Include your models. Files there that are not readable models, or that have a bundled
        model's name, are left out, as is the whole folder if it cannot be read.

    Returns
    -------
    list of ModelInfo
        Empty when no model is installed.
    """
    bundled = [model_info(path) for path in sorted(bundled_dir().glob("*.safetensors"))]
    try:
        paths = sorted(user_models_dir().glob("*.safetensors")) if user else []
    except OSError:  # an unreadable folder lists nothing rather than breaking every dock
        paths = []
    names = {m.name for m in bundled}
    yours = []
    for path in paths:
        if path.stem not in names:
            try:
                yours.append(model_info(path))
            except ModelFileError:
                continue
    return bundled + yours


def model_info(name_or_path: str | os.PathLike) -> ModelInfo:
    """What a model name (see :func:`list_models`) or a ``.safetensors`` path holds, from its
    metadata only.

    Raises
    ------
    ModelFileError
        The file is missing, not a safetensors file or not one of ours (one-line message).
    """
    path = _resolve(name_or_path)
    config, card = _read_metadata(path)
    return ModelInfo(path.name.removesuffix(".safetensors"), path, config, card)


def _resolve(name_or_path: str | os.PathLike) -> Path:
    path = Path(name_or_path)
    if path.suffix == ".safetensors" or path.exists() or os.sep in str(name_or_path):
        if not path.is_file():
            raise ModelFileError(f"model file not found: {path}")
        return path
    for folder in (bundled_dir(), user_models_dir()):
        if (folder / f"{name_or_path}.safetensors").is_file():
            return folder / f"{name_or_path}.safetensors"
    names = ", ".join(m.name for m in list_models()) or "none installed"
    raise ModelFileError(f"unknown model {str(name_or_path)!r}; models: {names}")


def load_model(name_or_path: str | os.PathLike) -> LoadedModel:
    """Rebuild a model from its name (see :func:`list_models`) or a ``.safetensors`` path.

    The model is returned in eval mode, float32, on the CPU.

    Raises
    ------
    ModelFileError
        The file is missing, not a safetensors file, not one of ours, or its tensors do not
        match its config (one-line message).
    """
    info = model_info(name_or_path)
    path, config = info.path, info.config
    try:  # model_info checked names, shapes and dtypes against the config before this
        with safe_open(str(path), framework="pt") as f:
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open has no __iter__)
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelFileError(f"{path} is corrupt: {exc}") from None
    if not all(torch.isfinite(t).all() for t in tensors.values() if t.is_floating_point()):
        raise ModelFileError(f"{path} contains NaN or infinite weights")
    model = build_model(config)
    expected = model.state_dict()
    model.load_state_dict({k: t.to(expected[k].dtype) for k, t in tensors.items()})
    model.eval()
    return LoadedModel(info.name, model, config, info.card, path)
