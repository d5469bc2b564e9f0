# SPDX-License-Identifier: LGPL-2.1-or-later
"""``@frozen`` makes the class ``@dataclass(frozen=True)`` makes.

Each case defines one class body twice, once under each decorator, and
compares what anyone can observe: construction (defaults, factories,
``init=False`` fields, ``__post_init__``, the errors), ``repr``, equality,
hashing, the signature, the :mod:`dataclasses` functions, assignment and
deletion (:class:`~dataclasses.FrozenInstanceError`), subclasses, pickling.
"""

import copy
import dataclasses
import inspect
import pickle
from dataclasses import FrozenInstanceError, InitVar, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import pytest

import kho_inspect
from kho_inspect.frozen import frozen

Maker = Callable[[Callable[[type], type]], type]


def both(make: Maker) -> Tuple[type, type]:
    """``make`` under ``@dataclass(frozen=True)`` and under ``@frozen``."""
    return make(dataclasses.dataclass(frozen=True)), make(frozen)


def _full(deco: Callable[[type], type]) -> type:
    @deco
    class Full:
        """Every kind of field."""

        a: int
        b: str = "x"
        c: Mapping[str, int] = field(default_factory=dict, hash=False)
        d: int = field(default=3, compare=False, repr=False)
        e: int = field(default=4, init=False)
        f: List[int] = field(default_factory=list, init=False, hash=False)
        g: Optional[Tuple[int, ...]] = field(default=None, hash=True, compare=False)

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("a < 0")

    return Full


def _empty(deco: Callable[[type], type]) -> type:
    @deco
    class Empty:
        pass

    return Empty


def _one(deco: Callable[[type], type]) -> type:
    @deco
    class One:
        """One field."""

        x: float

    return One


def _own_methods(deco: Callable[[type], type]) -> type:
    @deco
    class Own:
        """Its own equality (so no hash of its own) and repr."""

        x: int

        def __eq__(self, other: object) -> bool:
            return isinstance(other, Own) and self.x % 10 == other.x % 10

        def __repr__(self) -> str:
            return f"<{self.x}>"

    return Own


def _own_hash(deco: Callable[[type], type]) -> type:
    @deco
    class OwnHash:
        """Its own hash."""

        x: int

        def __hash__(self) -> int:
            return 7

    return OwnHash


CASES = {"full": _full, "empty": _empty, "one": _one, "own methods": _own_methods,
         "own hash": _own_hash}
ARGS: Dict[str, List[Tuple[Tuple[Any, ...], Dict[str, Any]]]] = {
    "full": [((1,), {}), ((1, "y", {"k": 1}), {"d": 9, "g": (1, 2)}), ((2,), {"g": None})],
    "empty": [((), {})],
    "one": [((1.5,), {}), ((float("nan"),), {})],
    "own methods": [((1,), {}), ((11,), {})],
    "own hash": [((1,), {}), ((2,), {})],
}


def observe(cls: type, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Dict[str, Any]:
    """What can be seen of one instance of ``cls`` (its class name left out)."""
    obj = cls(*args, **kwargs)
    seen: Dict[str, Any] = {
        "repr": repr(obj).replace(cls.__qualname__, "C"),
        "eq self": obj == obj,
        "eq copy": obj == cls(*args, **kwargs),
        "ne copy": obj != cls(*args, **kwargs),
        "eq other type": obj == object(),
        "fields": [(f.name, f.init, f.repr, f.compare, f.hash) for f in dataclasses.fields(obj)],
        "asdict": dataclasses.asdict(obj),
        "astuple": dataclasses.astuple(obj),
        "deepcopy eq": copy.deepcopy(obj) == obj,
        "signature": str(inspect.signature(cls)),
        "match_args": getattr(cls, "__match_args__", None),
        "params": repr(cls.__dataclass_params__),
        "doc": cls.__doc__.replace(cls.__name__, "C"),
    }
    try:
        seen["hash"] = hash(obj)
    except TypeError as e:
        seen["hash"] = str(e).replace(cls.__qualname__, "C")
    for name in ("a", "x", "zz"):
        for what, act in (("set", lambda o, n: setattr(o, n, 1)), ("del", delattr)):
            try:
                act(obj, name)
                seen[f"{what} {name}"] = "allowed"
            except FrozenInstanceError as e:
                seen[f"{what} {name}"] = f"FrozenInstanceError: {e}"
    if dataclasses.fields(obj):
        first = dataclasses.fields(obj)[0]
        seen["replace"] = repr(dataclasses.replace(obj, **{first.name: args[0]}))
    return seen


@pytest.mark.parametrize("case", sorted(CASES))
def test_same_as_dataclass(case: str) -> None:
    reference, ours = both(CASES[case])
    assert "__frozen_spec__" in vars(ours)
    for args, kwargs in ARGS[case]:
        assert observe(ours, args, kwargs) == observe(reference, args, kwargs)


def test_same_errors() -> None:
    reference, ours = both(_full)
    for cls in (reference, ours):
        with pytest.raises(ValueError, match="a < 0"):
            cls(-1)
        with pytest.raises(TypeError, match=r"__init__\(\) missing 1 required positional"):
            cls()
        with pytest.raises(TypeError, match="unexpected keyword argument 'e'"):
            cls(1, e=5)
        with pytest.raises(ValueError, match="init=False"):
            dataclasses.replace(cls(1), e=5)


def test_defaults_are_fresh() -> None:
    ours = _full(frozen)
    one, two = ours(1), ours(1)
    assert one.c == {} and one.c is not two.c and one.f is not two.f


def test_rejected_like_dataclass() -> None:
    def non_default_after_default(deco: Callable[[type], type]) -> type:
        @deco
        class Bad:
            a: int = 1
            b: int

        return Bad

    def own_setattr(deco: Callable[[type], type]) -> type:
        @deco
        class Bad:
            a: int

            def __setattr__(self, name: str, value: Any) -> None:
                pass

        return Bad

    for make, message in ((non_default_after_default, "non-default argument 'b' follows"),
                          (own_setattr, "Cannot overwrite attribute __setattr__")):
        for deco in (dataclasses.dataclass(frozen=True), frozen):
            with pytest.raises(TypeError, match=message):
                make(deco)


def test_subclass() -> None:
    """A plain subclass may set new attributes but no field; the base's
    methods serve it, as dataclasses' generated ones do."""
    results = []
    for base in both(_one):
        class Sub(base):  # type: ignore[misc, valid-type]
            pass

        sub = Sub(2.0)
        sub.extra = 3
        with pytest.raises(FrozenInstanceError):
            sub.x = 1.0
        del sub.extra
        results.append((repr(sub), sub == Sub(2.0), sub == base(2.0), hash(sub)))
    assert results[0] == results[1]


@frozen
class Picklable:
    """A module-level class, for pickle."""

    a: int
    b: Tuple[str, ...] = ()


def test_pickle() -> None:
    obj = Picklable(1, ("x",))
    assert pickle.loads(pickle.dumps(obj)) == obj
    assert copy.copy(obj) == obj


def test_falls_back_to_dataclass() -> None:
    """Classes it does not make itself (InitVar, a dataclass base) are
    dataclass(frozen=True)'s."""

    @frozen
    class WithInitVar:
        a: int
        scale: InitVar[int] = 1

        def __post_init__(self, scale: int) -> None:
            object.__setattr__(self, "a", self.a * scale)

    @frozen
    class Derived(Picklable):
        c: int = 0

    assert "__frozen_spec__" not in vars(WithInitVar)
    assert WithInitVar(2, 3).a == 6 and WithInitVar(2, 3) == WithInitVar(6)
    assert Derived(1, (), 2) == Derived(1, (), 2) and Derived(1).c == 0
    with pytest.raises(FrozenInstanceError):
        Derived(1).c = 3


def _frozen_classes() -> List[type]:
    import importlib
    import pkgutil

    found = []
    for info in pkgutil.walk_packages(kho_inspect.__path__, "kho_inspect."):
        if ".lab" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        found.extend(v for v in vars(module).values()
                     if isinstance(v, type) and v.__module__ == module.__name__
                     and "__frozen_spec__" in vars(v))
    return found


def test_package_classes_are_frozen_dataclasses() -> None:
    classes = _frozen_classes()
    assert len(classes) >= 60  # the model, the codecs' and the checks' records
    for cls in classes:
        params = cls.__dataclass_params__
        assert (params.init, params.repr, params.eq, params.frozen) == (True,) * 4, cls
        assert dataclasses.is_dataclass(cls) and cls.__init__.__qualname__.startswith(
            cls.__qualname__), cls
