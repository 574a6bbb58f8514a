"""The registry of denoising methods, learned and classical.

Every method registers under a name with a one-line description; the Python API, the CLI and
the napari widgets read their choices from here, so a new method needs no change there. A
method is a *runner factory*: given the job's :class:`MethodContext` it returns a callable that
denoises one item of shape ``(channels, *spatial)`` (intensities normalised to about [0, 1]) as
a generator yielding ``(done, total)`` progress pairs and returning the denoised item.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Method", "MethodContext", "get_method", "list_methods", "method_for_kind", "register_method"]

Runner = Callable[[np.ndarray], Generator[tuple[int, int], None, np.ndarray]]


@dataclass
class MethodContext:
    """What a method needs to know about one denoising job."""

    spatial_dims: int
    channels: int
    model: Any = None
    device: str = "auto"
    tile_shape: int | tuple[int, ...] | None = None
    overlap: float = 0.25
    options: dict[str, Any] = field(default_factory=dict)
    plane_weights: tuple[float, ...] | None = None
    """A 2D model over a volume: the three directions' weights (default: ``plane_weights``)."""


@dataclass(frozen=True)
class Method:
    """A registered denoising method."""

    name: str
    description: str
    factory: Callable[[MethodContext], Runner]
    learned: bool = False
    spatial_dims: tuple[int, ...] = (2, 3)
    requires: str | None = None
    """Optional package the method needs (``None``: always available)."""
    options: tuple[str, ...] = ()
    """Keyword options the method accepts through ``denoise(**options)``."""
    model_kind: str | None = None
    """A learned method's network family: the ``kind`` of the model configs it runs."""
    default_models: Mapping[tuple[int, int], str] = field(default_factory=dict)
    """A learned method's bundled model for (spatial_dims, channels) data when none is given."""
    noise_map: Callable[..., Generator[Any, None, np.ndarray]] | None = None
    """The method's own estimate of the noise in an image, if it makes one: called like
    ``iter_denoise`` without ``method``, a generator of progress records returning the noise
    (image units, the image's shape)."""

    @property
    def available(self) -> bool:
        return self.requires is None or importlib.util.find_spec(self.requires) is not None


_REGISTRY: dict[str, Method] = {}


def register_method(
    name: str,
    description: str,
    *,
    learned: bool = False,
    spatial_dims: tuple[int, ...] = (2, 3),
    requires: str | None = None,
    options: tuple[str, ...] = (),
    model_kind: str | None = None,
    default_models: Mapping[tuple[int, int], str] | None = None,
    noise_map: Callable[..., Generator[Any, None, np.ndarray]] | None = None,
) -> Callable[[Callable[[MethodContext], Runner]], Callable[[MethodContext], Runner]]:
    """Decorator registering a runner factory as a method called ``name``."""

    def decorate(factory: Callable[[MethodContext], Runner]) -> Callable[[MethodContext], Runner]:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = Method(
            name,
            description,
            factory,
            learned,
            spatial_dims,
            requires,
            options,
            model_kind,
            dict(default_models or {}),
            noise_map,
        )
        return factory

    return decorate


PRIMARY = "adl"


def list_methods() -> list[str]:
    """Names of all registered methods: ADL (the product's primary method), the other learned
    ones, then the classical ones, each group by name.

    Examples
    --------
    >>> "adl" in list_methods()
    True
    """
    return sorted(_REGISTRY, key=lambda n: (n != PRIMARY, not _REGISTRY[n].learned, n))


def method_for_kind(kind: str, model: str | None = None) -> Method | None:
    """The learned method that runs networks of this ``kind``, if one is registered; with a
    ``model`` name, the method whose default that model is comes first (two methods can share a
    family: IDResNet and IDGAN)."""
    runners = [m for m in _REGISTRY.values() if m.model_kind == kind]
    owner = [m for m in runners if model in m.default_models.values()]
    return next(iter(owner + runners), None)


def get_method(name: str) -> Method:
    """The registered method called ``name``.

    Raises
    ------
    ValueError
        If no method has that name (the message lists the choices).
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of: {', '.join(list_methods())}") from None
