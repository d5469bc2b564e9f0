# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Model base
----------

The ``kho_inspect.model.base`` module gives every model type one lossless
JSON form without a hand-written ``to_json``/``from_json`` pair per class.

A model type is a frozen dataclass whose fields are annotated with plain types:
``int``, ``str``, ``bool``, ``float``, ``None``, ``Optional[X]``,
``Tuple[X, ...]``, ``Tuple[X, Y]``, ``List[X]``, ``Mapping[K, V]`` (JSON keys
are strings, turned back into ``K``), other model dataclasses, and classes
that bring their own ``to_json()``/``from_json()`` (``Range``, ``RangeSet``,
``FlagTable``). :func:`to_json` and :func:`from_json` walk the annotations, so
``from_json(cls, to_json(x)) == x`` holds for every such type (the property
tests in ``tests/test_model_roundtrip.py`` check each one).

Types whose JSON predates this module (and whose commands' output must not
change) keep their own ``to_json``/``from_json``; :func:`to_json` and
:func:`from_json` call those methods when a class defines them, so a generic
model may hold a hand-shaped one.

Documents saved to disk and read back by another kernel (a snapshot, a check
run) are wrapped by :func:`document` with a ``schema`` name and a ``version``;
:func:`open_document` refuses another schema or a newer version with one
sentence.
"""

import dataclasses
import sys
import typing
from typing import Any, Dict, Mapping, Tuple, Type, TypeVar, Union

from kho_inspect.errors import InputError

__all__ = ("JsonModel", "to_json", "from_json", "document", "open_document")

T = TypeVar("T")

_NONE_TYPE = type(None)


class JsonModel:
    """Mixin: ``to_json()`` and ``from_json()`` derived from the annotations."""

    def to_json(self) -> Dict[str, Any]:
        return _dataclass_to_json(self)

    @classmethod
    def from_json(cls: Type[T], obj: Mapping[str, Any]) -> T:
        return _dataclass_from_json(cls, obj)


def to_json(value: Any) -> Any:
    """The JSON form (dicts, lists, str, int, float, bool, None) of a model value."""
    method = getattr(value, "to_json", None)
    if method is not None and not isinstance(value, type):
        return method()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _dataclass_to_json(value)
    if isinstance(value, (list, tuple, frozenset, set)):
        return [to_json(v) for v in value]
    if isinstance(value, Mapping):
        return {_key_to_json(k): to_json(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    return value


def from_json(tp: Any, obj: Any) -> Any:
    """Rebuild a value of type ``tp`` from its :func:`to_json` form.

    :raises TypeError, ValueError, KeyError: ``obj`` does not have the shape of ``tp``.
    """
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp is Any:
        return obj
    if origin is Union:
        return _union_from_json(args, obj)
    if origin in (tuple, Tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(from_json(args[0], v) for v in obj)
        if not args:
            return tuple(obj)
        if len(args) != len(obj):
            raise ValueError(f"expected {len(args)} items, got {len(obj)}")
        return tuple(from_json(a, v) for a, v in zip(args, obj))
    if origin in (list, typing.List, typing.Sequence, _abc("Sequence")):
        return [from_json(args[0] if args else Any, v) for v in obj]
    if origin in (dict, typing.Dict, typing.Mapping, _abc("Mapping")):
        key_t, val_t = args if args else (Any, Any)
        return {_key_from_json(key_t, k): from_json(val_t, v) for k, v in obj.items()}
    if tp is _NONE_TYPE:
        if obj is not None:
            raise TypeError(f"expected null, got {obj!r}")
        return None
    if isinstance(tp, type):
        own = getattr(tp, "from_json", None)
        if own is not None and "from_json" in _own_attrs(tp):
            return own(obj)
        if dataclasses.is_dataclass(tp):
            return _dataclass_from_json(tp, obj)
        if tp is bytes:
            return bytes.fromhex(obj)
        if tp is float:
            return float(obj)
        if tp in (int, str, bool):
            if not isinstance(obj, tp) or (tp is int and isinstance(obj, bool)):
                raise TypeError(f"expected {tp.__name__}, got {obj!r}")
            return obj
    raise TypeError(f"cannot rebuild {tp!r} from JSON")


def document(schema: str, version: int, body: Mapping[str, Any]) -> Dict[str, Any]:
    """A saved document: ``{"schema": ..., "version": ..., **body}``."""
    return {"schema": schema, "version": version, **body}


def open_document(obj: Any, schema: str, version: int, what: str) -> Mapping[str, Any]:
    """Check the header written by :func:`document` and return the object.

    :param what: how to name the file in an error ("the snapshot FILE").
    :raises InputError: not a ``schema`` document, or a newer version than ``version``.
    """
    if not isinstance(obj, Mapping) or obj.get("schema") != schema:
        found = obj.get("schema") if isinstance(obj, Mapping) else type(obj).__name__
        raise InputError(f"{what} is not a {schema} document (its schema is {found!r}).")
    got = obj.get("version")
    if not isinstance(got, int) or got > version:
        raise InputError(f"{what} has {schema} version {got!r}; this kho-inspect reads "
                         f"versions up to {version}: upgrade kho-inspect.")
    return obj


# --- internals ----------------------------------------------------------------


def _abc(name: str) -> Any:
    import collections.abc

    return getattr(collections.abc, name)


def _own_attrs(tp: type) -> set:
    # from_json defined by the class or a base other than JsonModel.
    names: set = set()
    for klass in tp.__mro__:
        if klass is JsonModel or klass is object:
            continue
        names.update(vars(klass))
    return names


def _hints(cls: type) -> Dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, vars(module) if module else None)


def _dataclass_to_json(obj: Any) -> Dict[str, Any]:
    return {f.name: to_json(getattr(obj, f.name)) for f in dataclasses.fields(obj)
            if f.init}


def _dataclass_from_json(cls: Any, obj: Mapping[str, Any]) -> Any:
    if not isinstance(obj, Mapping):
        raise TypeError(f"expected an object for {cls.__name__}, got {type(obj).__name__}")
    hints = _hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.name in obj:
            kwargs[f.name] = from_json(hints[f.name], obj[f.name])
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise KeyError(f"{cls.__name__}.{f.name}")
    return cls(**kwargs)


def _union_from_json(args: Tuple[Any, ...], obj: Any) -> Any:
    if obj is None and _NONE_TYPE in args:
        return None
    errors = []
    for arg in args:
        if arg is _NONE_TYPE:
            continue
        try:
            return from_json(arg, obj)
        except (TypeError, ValueError, KeyError) as e:
            errors.append(str(e))
    raise TypeError(f"no member of {args!r} fits {obj!r}: {'; '.join(errors)}")


def _key_to_json(key: Any) -> str:
    if key is None:
        return "-"
    return str(key)


def _key_from_json(tp: Any, key: str) -> Any:
    if typing.get_origin(tp) is Union:
        if key == "-" and _NONE_TYPE in typing.get_args(tp):
            return None
        tp = next(a for a in typing.get_args(tp) if a is not _NONE_TYPE)
    if tp is int:
        return int(key)
    return key
