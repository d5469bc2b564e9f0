# SPDX-License-Identifier: LGPL-2.1-or-later
"""
Frozen dataclasses, made cheaply
--------------------------------

The ``kho_inspect.frozen`` module provides :func:`frozen`, the decorator of
the frozen record types on ``check``'s path (the model, the codecs' records,
the check records): ``@frozen`` makes the same class as
``@dataclasses.dataclass(frozen=True)`` does, at a fifth of the cost.

Python's :mod:`dataclasses` writes and compiles six functions for each frozen
class (``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__``
and ``__delattr__``): about 0.7 ms per class, and ``kho-inspect check``
defines some seventy classes before it reads the first byte of a kernel
(bench/bench_check.py). Here :mod:`dataclasses` collects the fields (so
:func:`dataclasses.fields`, :func:`~dataclasses.asdict`,
:func:`~dataclasses.replace` and :func:`~dataclasses.is_dataclass` work as
ever), only ``__init__`` is compiled, and the other five are shared functions
that read the class's fields: the same comparisons, hash, ``repr`` text and
:class:`~dataclasses.FrozenInstanceError` on assignment as the generated
ones, and ``__dataclass_params__`` says ``frozen=True``. A method the class
defines itself is kept, as :mod:`dataclasses` keeps it.

Classes :func:`frozen` does not handle this way (``InitVar`` or keyword-only
fields, a field named ``self``, ``__slots__``, a dataclass base class) are
handed to ``dataclasses.dataclass(frozen=True)`` unchanged.
"""

import _thread
import dataclasses
import inspect
from operator import attrgetter
from typing import Any, Callable, Dict, NamedTuple, Tuple, Type, TypeVar

__all__ = ("frozen",)

T = TypeVar("T")

_OWN = ("__setattr__", "__delattr__")
_MISSING = dataclasses.MISSING
_KW_ONLY = getattr(dataclasses, "KW_ONLY", None)  # Python >= 3.10


class _FactorySentinel:
    # The default of a parameter whose field has a default_factory, as
    # dataclasses shows it in signatures.
    def __repr__(self) -> str:
        return "<factory>"


_HAS_DEFAULT_FACTORY = _FactorySentinel()


class _Spec(NamedTuple):
    """What the shared methods need to know about a class made by :func:`frozen`.

    :param owner: the decorated class.
    :param names: its field names, in order.
    :param compare: the ``__eq__`` key of an instance (a tuple).
    :param hash_key: the ``__hash__`` key of an instance (a tuple).
    :param shown: the names ``repr`` shows.
    """

    owner: type
    names: Tuple[str, ...]
    compare: Callable[[Any], Tuple[Any, ...]]
    hash_key: Callable[[Any], Tuple[Any, ...]]
    shown: Tuple[str, ...]


def frozen(cls: Type[T]) -> Type[T]:
    """``@dataclasses.dataclass(frozen=True)``, with one function compiled instead of six.

    :raises TypeError: as :mod:`dataclasses` raises it (a field without a
        default after one with a default, a ``__setattr__`` or ``__delattr__``
        defined in the class).
    """
    if not _simple(cls):
        return dataclasses.dataclass(frozen=True)(cls)
    for name in _OWN:
        if name in cls.__dict__:
            raise TypeError(f"Cannot overwrite attribute {name} in class {cls.__name__}")
    documented = bool(cls.__dict__.get("__doc__"))
    explicit_hash = _has_explicit_hash(cls)
    if not documented:
        # dataclasses would describe the class by the signature of an
        # __init__ it has not got yet: object's, parsed from text (slow)
        cls.__doc__ = "-"
    dataclasses.dataclass(init=False, repr=False, eq=False)(cls)
    fields = dataclasses.fields(cls)
    cls.__frozen_spec__ = _Spec(  # type: ignore[attr-defined]
        owner=cls,
        names=tuple(f.name for f in fields),
        compare=_tuple_getter([f.name for f in fields if f.compare]),
        hash_key=_tuple_getter([f.name for f in fields
                                if (f.compare if f.hash is None else f.hash)]),
        shown=tuple(f.name for f in fields if f.repr),
    )
    _set_new(cls, "__init__", _init_fn(cls, fields))
    _set_new(cls, "__repr__", _frozen_repr)
    _set_new(cls, "__eq__", _frozen_eq)
    cls.__setattr__ = _frozen_setattr  # type: ignore[assignment]
    cls.__delattr__ = _frozen_delattr  # type: ignore[assignment]
    if not explicit_hash:
        cls.__hash__ = _frozen_hash  # type: ignore[assignment]
    params = cls.__dataclass_params__  # type: ignore[attr-defined]
    params.init = params.repr = params.eq = params.frozen = True
    if not documented:
        cls.__doc__ = cls.__name__ + str(inspect.signature(cls)).replace(" -> None", "")
    return cls


# --- what dataclasses would have generated ------------------------------------


def _frozen_eq(self: Any, other: Any) -> Any:
    if other.__class__ is self.__class__:
        key = self.__frozen_spec__.compare
        return key(self) == key(other)
    return NotImplemented


def _frozen_hash(self: Any) -> int:
    return hash(self.__frozen_spec__.hash_key(self))


_repr_running: set = set()


def _frozen_repr(self: Any) -> str:
    # As dataclasses' repr (reprlib.recursive_repr): "..." for an object
    # met again while it is being shown.
    key = (id(self), _thread.get_ident())
    if key in _repr_running:
        return "..."
    _repr_running.add(key)
    try:
        shown = ", ".join(f"{name}={getattr(self, name)!r}"
                          for name in self.__frozen_spec__.shown)
        return f"{self.__class__.__qualname__}({shown})"
    finally:
        _repr_running.discard(key)


def _frozen_setattr(self: Any, name: str, value: Any) -> None:
    spec = type(self).__frozen_spec__
    if type(self) is spec.owner or name in spec.names:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")
    super(spec.owner, self).__setattr__(name, value)


def _frozen_delattr(self: Any, name: str) -> None:
    spec = type(self).__frozen_spec__
    if type(self) is spec.owner or name in spec.names:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")
    super(spec.owner, self).__delattr__(name)


# --- internals ----------------------------------------------------------------


def _simple(cls: type) -> bool:
    """Whether :func:`frozen` makes ``cls`` itself (no InitVar, keyword-only
    fields, slots or dataclass bases)."""
    if "__slots__" in cls.__dict__:
        return False
    if any(hasattr(base, "__dataclass_fields__") for base in cls.__mro__[1:]):
        return False
    annotations = cls.__dict__.get("__annotations__", {})
    if "self" in annotations:  # the name of __init__'s first parameter here
        return False
    for tp in annotations.values():
        if isinstance(tp, str):
            if "InitVar" in tp or "KW_ONLY" in tp:
                return False
        elif isinstance(tp, dataclasses.InitVar) or tp in (dataclasses.InitVar, _KW_ONLY):
            return False
    return not any(isinstance(v, dataclasses.Field) and getattr(v, "kw_only", False) is True
                   for v in cls.__dict__.values())


def _has_explicit_hash(cls: type) -> bool:
    # dataclasses: a __hash__ the class defines, not the None Python sets
    # for a class that defines __eq__ alone.
    class_hash = cls.__dict__.get("__hash__", _MISSING)
    return not (class_hash is _MISSING or (class_hash is None and "__eq__" in cls.__dict__))


def _set_new(cls: type, name: str, value: Any) -> None:
    # as dataclasses: a method the class defines itself stays
    if name not in cls.__dict__:
        setattr(cls, name, value)


def _tuple_getter(names: list) -> Callable[[Any], Tuple[Any, ...]]:
    if not names:
        return lambda obj: ()
    if len(names) == 1:
        one = attrgetter(names[0])
        return lambda obj: (one(obj),)
    return attrgetter(*names)


def _init_fn(cls: type, fields: Tuple[dataclasses.Field, ...]) -> Callable[..., None]:
    """``__init__``, as dataclasses writes it for a frozen class: the fields
    set with ``object.__setattr__``, defaults, default factories, and
    ``__post_init__`` called last."""
    # Dunder names, which no field takes (as dataclasses' __dataclass_builtins_object__).
    scope: Dict[str, Any] = {"__frozen_setattr__": object.__setattr__,
                             "__frozen_factory__": _HAS_DEFAULT_FACTORY}
    params, body = ["self"], []
    seen_default = False
    for f in fields:
        has_default = f.default is not _MISSING or f.default_factory is not _MISSING
        if f.init:
            if has_default:
                seen_default = True
            elif seen_default:
                raise TypeError(f"non-default argument {f.name!r} follows default argument")
        value = _field_value(f, scope, params)
        if value is not None:
            body.append(f" __frozen_setattr__(self, {f.name!r}, {value})")
    if hasattr(cls, "__post_init__"):
        body.append(" self.__post_init__()")
    source = f"def __init__({', '.join(params)}):\n" + ("\n".join(body) or " pass") + "\n"
    ns: Dict[str, Any] = {}
    exec(source, scope, ns)
    init = ns["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    init.__annotations__ = {**{f.name: f.type for f in fields if f.init}, "return": None}
    return init


def _field_value(f: dataclasses.Field, scope: Dict[str, Any], params: list) -> Any:
    """The expression ``__init__`` sets field ``f`` to (``None``: not set there),
    adding its parameter to ``params`` and its default to ``scope``."""
    default = f"_dflt_{f.name}"
    if f.default_factory is not _MISSING:
        scope[default] = f.default_factory
        if not f.init:
            return f"{default}()"
        params.append(f"{f.name}=__frozen_factory__")
        return f"{default}() if {f.name} is __frozen_factory__ else {f.name}"
    if not f.init:
        return None  # read from the class attribute, as dataclasses leaves it
    if f.default is not _MISSING:
        scope[default] = f.default
        params.append(f"{f.name}={default}")
    else:
        params.append(f.name)
    return f.name
