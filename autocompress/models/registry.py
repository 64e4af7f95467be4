"""A timm-style model registry: builders registered by name, one factory.

``create_model(name, **kwargs)`` builds either a registered model or any
``"package.module:callable"`` that returns an ``nn.Module``.  Keyword arguments
whose value is ``None`` are dropped, so ``None`` always means "use the
builder's default".
"""

from __future__ import annotations

import importlib
import inspect
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from torch import nn

__all__ = [
    "GENERIC_FAMILY",
    "ModelError",
    "ModelInfo",
    "create_model",
    "list_models",
    "model_info",
    "register_model",
]

logger = logging.getLogger(__name__)

#: Family reported for ``module:callable`` models (and the default family).
GENERIC_FAMILY = "generic"

Builder = Callable[..., nn.Module]


class ModelError(ValueError):
    """A model name or builder cannot be resolved or did not build a model."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry knows about a model.

    ``family`` names the default search space (``search_spaces/<family>.yaml``);
    ``default_kwargs`` are the builder's keyword parameters and their defaults.
    """

    name: str
    family: str
    builder: Builder
    default_kwargs: dict[str, Any] = field(default_factory=dict)


_REGISTRY: dict[str, ModelInfo] = {}


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):  # builtins and some C callables have none
        return None


def _default_kwargs(fn: Callable[..., Any]) -> dict[str, Any]:
    sig = _signature(fn)
    if sig is None:
        return {}
    return {
        p.name: p.default
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.default is not p.empty
    }


def _accepted_names(sig: inspect.Signature) -> tuple[set[str], bool]:
    """Names ``sig`` accepts by keyword, and whether it takes ``**kwargs``."""
    names = {
        p.name
        for p in sig.parameters.values()
        if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
    }
    var_kw = any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values())
    return names, var_kw


def register_model(name: str, *, family: str = GENERIC_FAMILY) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder`` under ``name`` with a search-space ``family``."""
    if not isinstance(name, str) or not name or ":" in name:
        raise ModelError(f"model name must be a non-empty string without ':' (got {name!r})")
    if not isinstance(family, str) or not family:
        raise ModelError(f"model family must be a non-empty string (got {family!r})")

    def decorator(builder: Builder) -> Builder:
        if not callable(builder):
            raise ModelError(f"register_model({name!r}): builder {builder!r} is not callable")
        old = _REGISTRY.get(name)
        if old is not None and _qualname(old.builder) != _qualname(builder):
            raise ModelError(
                f"model name {name!r} is already registered by {_qualname(old.builder)}; "
                f"cannot register {_qualname(builder)} under the same name"
            )
        _REGISTRY[name] = ModelInfo(
            name=name, family=family, builder=builder, default_kwargs=_default_kwargs(builder)
        )
        return builder

    return decorator


def _qualname(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    return f"{module}.{getattr(fn, '__qualname__', repr(fn))}"


def list_models() -> list[str]:
    """Names of all registered models, sorted."""
    return sorted(_REGISTRY)


def _unknown(name: str) -> ModelError:
    names = ", ".join(list_models()) or "(none)"
    return ModelError(
        f"unknown model {name!r}; registered models: {names}; "
        "or give any builder as 'package.module:callable' (it must return an nn.Module)"
    )


def _resolve_callable(spec: str) -> Builder:
    module_name, _, attr_path = spec.partition(":")
    if not module_name or not attr_path:
        raise ModelError(
            f"model {spec!r}: expected 'package.module:callable' with both parts non-empty"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # ImportError, or anything the module raises on import
        raise ModelError(
            f"model {spec!r}: cannot import module {module_name!r}: {type(exc).__name__}: {exc}"
        ) from exc
    obj: Any = module
    for part in attr_path.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise ModelError(
                f"model {spec!r}: module {module_name!r} has no attribute {attr_path!r}"
            ) from exc
    if not callable(obj):
        raise ModelError(f"model {spec!r}: {attr_path!r} in {module_name!r} is not callable")
    return obj


def model_info(name: str) -> ModelInfo:
    """Registry entry for ``name``; for ``module:callable`` the family is ``"generic"``."""
    if ":" in name:
        builder = _resolve_callable(name)
        return ModelInfo(
            name=name,
            family=GENERIC_FAMILY,
            builder=builder,
            default_kwargs=_default_kwargs(builder),
        )
    try:
        info = _REGISTRY[name]
    except KeyError:
        raise _unknown(name) from None
    return ModelInfo(
        name=info.name,
        family=info.family,
        builder=info.builder,
        default_kwargs=dict(info.default_kwargs),
    )


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build model ``name`` (registered, or ``"package.module:callable"``).

    Keyword arguments whose value is ``None`` are dropped.  A registered builder
    must accept every remaining keyword (otherwise :class:`ModelError` names the
    offending parameter).  A ``module:callable`` builder only receives the
    keywords its signature accepts (e.g. a user model without ``in_channels``);
    the dropped ones are logged at debug level.
    """
    if not isinstance(name, str):
        raise ModelError(f"model name must be a string (got {type(name).__name__})")
    kwargs = {k: v for k, v in kwargs.items() if v is not None}
    generic = ":" in name
    if generic:
        builder = _resolve_callable(name)
    else:
        if name not in _REGISTRY:
            raise _unknown(name)
        builder = _REGISTRY[name].builder

    sig = _signature(builder)
    if sig is not None:
        accepted, var_kw = _accepted_names(sig)
        if not var_kw:
            extra = sorted(k for k in kwargs if k not in accepted)
            if extra and generic:
                logger.debug("model %s does not accept %s; dropping them", name, ", ".join(extra))
                kwargs = {k: v for k, v in kwargs.items() if k in accepted}
            elif extra:
                raise ModelError(
                    f"model {name!r} does not accept parameter(s) {', '.join(map(repr, extra))}; "
                    f"it accepts: {', '.join(sorted(accepted)) or '(none)'}"
                )

    try:
        model = builder(**kwargs)
    except ModelError:
        raise
    except TypeError as exc:
        raise ModelError(f"model {name!r}: building with {kwargs!r} failed: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ModelError(
            f"model {name!r}: builder {_qualname(builder)} returned "
            f"{type(model).__name__}, expected a torch.nn.Module"
        )
    return model
