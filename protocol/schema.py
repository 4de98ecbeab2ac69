"""Checking named values against annotated field declarations, with msgspec doing the checking.

A field declares what it accepts once, in its annotation: `Annotated[int, Meta(ge=100, le=5000)]`,
`Annotated[int, OneOf(SUPPORTED_SAMPLE_RATES)]`, `Annotated[str, Meta(max_length=64)]`. `FieldSchema`
turns the fields of a class into one msgspec type, so a whole patch is checked in a single call, and
writes the people-facing description of a field from the same declaration ("an integer in [100,
5000]") when a value does not fit. msgspec converts strictly: `true` is not an integer, `1` is not a
boolean, `"500"` is not a number, `1.5` is not an integer; integers are accepted where a number is.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import typing
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

import msgspec
from msgspec import UNSET, UnsetType
from msgspec import inspect as mi


@dataclasses.dataclass(frozen=True, slots=True)
class OneOf:
    """`Annotated` metadata: the value must be one of `values` (its static type stays, say, `int`)."""

    values: tuple[Any, ...]


class Mismatch(ValueError):
    """A value that does not fit its field; `expected` says in words what would."""

    def __init__(self, name: str, expected: str) -> None:
        super().__init__(f"{name} must be {expected}")
        self.name = name
        self.expected = expected


class UnknownField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f"{name} is not a known field")
        self.name = name


def runtime_type(hint: Any) -> Any:
    """The type msgspec checks against: `Annotated[T, OneOf(values)]` becomes `Literal[values]` (top level only)."""
    if typing.get_origin(hint) is Annotated:
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, OneOf):
                return Literal.__getitem__(extra.values)
    return hint


def convert(name: str, value: Any, hint: Any) -> Any:
    """`value` as the field declared by `hint` takes it; raises Mismatch saying what was expected."""
    return _field(hint).convert(name, value)


class FieldCheck:
    """One declared type, ready to check values against (msgspec keeps what it learned of a Struct's
    field types on the class, while a bare type is worked out again on every call: so one box each)."""

    __slots__ = ("_box", "_expected", "hint")

    def __init__(self, hint: Any) -> None:
        self.hint = hint
        self._box: type[Any] = msgspec.defstruct("Boxed", [("v", runtime_type(hint))])
        self._expected: str | None = None

    @property
    def expected(self) -> str:
        if self._expected is None:
            self._expected = describe(self.hint)
        return self._expected

    def convert(self, name: str, value: Any) -> Any:
        try:
            return msgspec.convert({"v": value}, self._box).v
        except (msgspec.ValidationError, RecursionError):
            raise Mismatch(name, self.expected) from None


@functools.cache
def _field(hint: Any) -> FieldCheck:
    return FieldCheck(hint)


@functools.cache
def describe(hint: Any) -> str:
    """What a field accepts, in words, e.g. "an integer in [100, 5000]" or "a string or null"."""
    if typing.get_origin(hint) is Annotated:
        for extra in typing.get_args(hint)[1:]:
            if isinstance(extra, msgspec.Meta) and extra.description:
                return extra.description  # the declaration's own words win over generated ones
    return _describe_info(mi.type_info(runtime_type(hint)))


def _describe_info(t: mi.Type) -> str:
    if isinstance(t, mi.UnionType):
        return " or ".join(_describe_info(arg) for arg in t.types)
    if isinstance(t, mi.NoneType):
        return "null"
    if isinstance(t, mi.BoolType):
        return "true or false"
    if isinstance(t, mi.IntType | mi.FloatType):
        noun = "an integer" if isinstance(t, mi.IntType) else "a number"
        return noun + _bounds(t.ge, t.gt, t.le, t.lt)
    if isinstance(t, mi.StrType):
        return "a string" + _length(t.min_length, t.max_length, "chars")
    if isinstance(t, mi.LiteralType):
        return "one of " + ", ".join(json.dumps(v) for v in t.values)
    if isinstance(t, mi.EnumType):
        return "one of " + ", ".join(json.dumps(member.value) for member in t.cls)
    if isinstance(t, mi.DictType):
        return "an object"
    if isinstance(t, mi.ListType | mi.VarTupleType):
        return "a list" + _length(t.min_length, t.max_length, "items") + " of " + _plural(_describe_info(t.item_type))
    if isinstance(t, mi.TupleType):
        return f"a list of {len(t.item_types)}: " + ", ".join(_describe_info(i) for i in t.item_types)
    return "any JSON value"


def _bounds(ge: float | None, gt: float | None, le: float | None, lt: float | None) -> str:
    if ge is not None and le is not None:
        return f" in [{_number(ge)}, {_number(le)}]"
    parts = [f"{op} {_number(v)}" for op, v in ((">=", ge), (">", gt), ("<=", le), ("<", lt)) if v is not None]
    return (" " + " and ".join(parts)) if parts else ""


def _number(value: float) -> str:
    return str(value) if isinstance(value, int) else f"{value:g}"


def _length(lo: int | None, hi: int | None, unit: str) -> str:
    if lo and hi is not None:
        return f" of {lo} to {hi} {unit}"
    if hi is not None:
        return f" of at most {hi} {unit}"
    if lo:
        return f" of at least {lo} {unit}" if lo > 1 else " (not empty)"
    return ""


def _plural(item: str) -> str:
    for article in ("an ", "a "):
        if item.startswith(article):
            return item[len(article) :].replace("string", "strings", 1).replace("integer", "integers", 1)
    return item


class FieldSchema:
    """The annotated fields of a dataclass (or any annotated class), checked as a whole or one by one."""

    def __init__(self, cls: type) -> None:
        self.hints: dict[str, Any] = {
            name: hint
            for name, hint in typing.get_type_hints(cls, include_extras=True).items()
            if typing.get_origin(hint) is not ClassVar
        }
        self.fields = {name: FieldCheck(hint) for name, hint in self.hints.items()}
        # one struct of optional fields: a partial mapping is checked in one msgspec call
        self._patch_type = msgspec.defstruct(
            f"{cls.__name__}Patch",
            [(name, runtime_type(hint) | UnsetType, UNSET) for name, hint in self.hints.items()],
            forbid_unknown_fields=True,
            frozen=True,
        )

    def check(self, values: Mapping[str, Any]) -> dict[str, Any]:
        """`values` converted to the declared types; raises UnknownField or Mismatch for the first bad key."""
        if not isinstance(values, Mapping):
            raise Mismatch("it", "an object")
        try:
            patch = msgspec.convert(values, self._patch_type)
        except (msgspec.ValidationError, RecursionError, TypeError):
            pass  # find the key to blame, and say what it should be
        else:
            return {name: value for name, value in msgspec.structs.asdict(patch).items() if value is not UNSET}
        for name, value in values.items():
            field = self.fields.get(name) if isinstance(name, str) else None
            if field is None:
                raise UnknownField(str(name))
            field.convert(name, value)
        raise Mismatch("the mapping", "an object of known fields")  # not reached: some key was to blame
