"""The official shape of an Azure resource's request body, from the Azure SDK for Python.

Each `azure-mgmt-*` package (PyPI) is generated from the service's official REST API
specification for one API version (or, for the older multi-API packages, one module per API
version). Its models name every property of a resource's PUT body as the REST API spells it,
which ones are read-only, which are required, the value types, and the known values of enums.
`validate` checks a template's resource body against that, key by key.

Two generations of generated models are read: the current one (`rest_field`, typed by
annotations, visibility per field) and the older msrest one (`_attribute_map` with flattened
keys such as `properties.serverFarmId`, and `_validation`).
"""

from __future__ import annotations

import datetime
import enum
import functools
import importlib
import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType, NoneType, UnionType
from typing import Any

from tests.deploy.azure_bicep import Expr

STORAGE = "azure.mgmt.storage.models"
WEB = "azure.mgmt.web.models"
APPS = "azure.mgmt.appcontainers.models"
# resource type -> (models module, model of the PUT body)
RESOURCE_MODELS: dict[str, tuple[str, str]] = {
    "Microsoft.Storage/storageAccounts": (STORAGE, "StorageAccountCreateParameters"),
    "Microsoft.Storage/storageAccounts/blobServices": (STORAGE, "BlobServiceProperties"),
    "Microsoft.Storage/storageAccounts/blobServices/containers": (STORAGE, "BlobContainer"),
    "Microsoft.Storage/storageAccounts/tableServices": (STORAGE, "TableServiceProperties"),
    "Microsoft.Storage/storageAccounts/tableServices/tables": (STORAGE, "Table"),
    "Microsoft.OperationalInsights/workspaces": ("azure.mgmt.loganalytics.models", "Workspace"),
    "Microsoft.Insights/components": (
        "azure.mgmt.applicationinsights.v2020_02_02.models",
        "ApplicationInsightsComponent",
    ),
    "Microsoft.App/managedEnvironments": (APPS, "ManagedEnvironment"),
    "Microsoft.App/jobs": (APPS, "Job"),
    "Microsoft.Web/serverfarms": (WEB, "AppServicePlan"),
    "Microsoft.Web/sites": (WEB, "Site"),
    "Microsoft.Authorization/roleAssignments": (
        "azure.mgmt.authorization.v2022_04_01.models",
        "RoleAssignmentCreateParameters",
    ),
}
# where the resource a template reads (`storage.properties.primaryEndpoints`) has another model
READ_MODELS = {"Microsoft.Storage/storageAccounts": "StorageAccount"}


@dataclass(frozen=True)
class Scalar:
    kind: str  # "str", "int", "float", "bool" or "any"
    enum: frozenset[str] | None = None


@dataclass(frozen=True)
class ListOf:
    item: Shape


@dataclass(frozen=True)
class MapOf:
    value: Shape


@dataclass(frozen=True)
class Field:
    shape: Callable[[], Shape]  # lazy: models refer to each other, and to themselves
    writable: bool
    required: bool


@dataclass(eq=False)
class Obj:
    name: str
    fields_of: Callable[[], dict[str, Field]] = field(repr=False)

    @functools.cached_property
    def fields(self) -> dict[str, Field]:
        return self.fields_of()


Shape = Scalar | ListOf | MapOf | Obj
ANY = Scalar("any")


def api_version_of(module_name: str) -> str:
    """The API version a models module was generated from."""
    match = re.search(r"\.v(\d{4})_(\d{2})_(\d{2})(_preview)?\.", module_name)
    if match:
        year, month, day, preview = match.groups()
        return f"{year}-{month}-{day}" + ("-preview" if preview else "")
    package = importlib.import_module(module_name.rsplit(".", 1)[0])
    source = Path(package.__file__ or "").with_name("_configuration.py").read_text()
    found = re.search(r'kwargs\.pop\("api_version", "([0-9a-z-]+)"\)', source)
    if found is None:
        raise LookupError(f"no default API version in {package.__name__}")
    return found.group(1)


def resource_shape(resource_type: str) -> tuple[str, Obj]:
    """(API version, shape of the PUT body) of an Azure resource type."""
    module_name, model = RESOURCE_MODELS[resource_type]
    module = importlib.import_module(module_name)
    return api_version_of(module_name), model_shape(module, getattr(module, model))


def read_shape(resource_type: str) -> Obj:
    """Shape of the resource as a GET returns it: what `symbol.properties.x` may read."""
    module_name, model = RESOURCE_MODELS[resource_type]
    module = importlib.import_module(module_name)
    return model_shape(module, getattr(module, READ_MODELS.get(resource_type, model)))


@functools.cache
def model_shape(module: ModuleType, cls: type) -> Obj:
    if hasattr(cls, "_attribute_map"):
        return _msrest_shape(module, cls)
    return Obj(cls.__name__, lambda: _rest_field_fields(module, cls))


def _rest_field_fields(module: ModuleType, cls: type) -> dict[str, Field]:
    cls.__new__(cls)  # the generated Model computes its _attr_to_rest_field on first use
    hints = typing.get_type_hints(cls, localns={"_models": module})
    found = {}
    for attr, rest in cls._attr_to_rest_field.items():  # type: ignore[attr-defined]
        hint = hints[attr]
        visibility = rest._visibility
        writable = visibility is None or "create" in visibility
        found[rest._rest_name] = Field(
            functools.partial(_hint_shape, module, hint),
            writable,
            writable and not _is_optional(hint),
        )
    return found


def _is_optional(hint: Any) -> bool:
    return typing.get_origin(hint) in (typing.Union, UnionType) and NoneType in typing.get_args(
        hint
    )


def _hint_shape(module: ModuleType, hint: Any) -> Shape:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, UnionType):
        options = [a for a in args if a is not NoneType]
        enums = [a for a in options if isinstance(a, type) and issubclass(a, enum.Enum)]
        if enums and all(a is str or a in enums for a in options):
            return Scalar("str", frozenset(str(m.value) for e in enums for m in e))
        return _hint_shape(module, options[0]) if len(options) == 1 else ANY
    if origin is typing.Literal:
        return Scalar("str", frozenset(str(a) for a in args))
    if origin is list:
        return ListOf(_hint_shape(module, args[0]))
    if origin is dict:
        return MapOf(_hint_shape(module, args[1]))
    if isinstance(hint, type):
        if issubclass(hint, enum.Enum):
            return Scalar("str", frozenset(str(m.value) for m in hint))
        if hint is bool:
            return Scalar("bool")
        if hint in (int, float):
            return Scalar(hint.__name__)
        if hint is str or issubclass(hint, (datetime.datetime, datetime.timedelta, bytes)):
            return Scalar("str")
        if getattr(hint, "_is_model", False) or hasattr(hint, "_attribute_map"):
            return model_shape(module, hint)
    return ANY


def _msrest_shape(module: ModuleType, cls: type) -> Obj:
    attribute_map: dict[str, dict[str, str]] = getattr(cls, "_attribute_map", {})
    validation: dict[str, dict[str, Any]] = getattr(cls, "_validation", {})
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    tree: dict[str, Any] = {}
    for attr, spec in attribute_map.items():
        rules = validation.get(attr, {})
        keys = [k.replace("\\.", ".") for k in re.split(r"(?<!\\)\.", spec["key"])]
        annotation = str(parameters[attr].annotation) if attr in parameters else ""
        shape = functools.partial(_msrest_type, module, spec["type"], annotation)
        leaf = Field(shape, not rules.get("readonly", False), bool(rules.get("required", False)))
        node = tree
        for key in keys[:-1]:
            node = node.setdefault(key, {})
        node[keys[-1]] = leaf
    return _tree_obj(cls.__name__, tree)


def _tree_obj(name: str, tree: dict[str, Any]) -> Obj:
    def fields() -> dict[str, Field]:
        found = {}
        for key, node in tree.items():
            if isinstance(node, Field):
                found[key] = node
            else:
                inner = _tree_obj(f"{name}.{key}", node)
                required = any(f.required for f in inner.fields.values())
                found[key] = Field(lambda inner=inner: inner, True, required)
        return found

    return Obj(name, fields)


_MSREST_SCALARS = {"str": "str", "int": "int", "long": "int", "float": "float", "bool": "bool"}


def _msrest_type(module: ModuleType, type_name: str, annotation: str) -> Shape:
    if type_name.startswith("[") and type_name.endswith("]"):
        return ListOf(_msrest_type(module, type_name[1:-1], ""))
    if type_name.startswith("{") and type_name.endswith("}"):
        return MapOf(_msrest_type(module, type_name[1:-1], ""))
    if type_name in _MSREST_SCALARS:
        enums = [getattr(module, name, None) for name in re.findall(r"_models\.(\w+)", annotation)]
        values = frozenset(
            str(m.value)
            for e in enums
            if isinstance(e, type) and issubclass(e, enum.Enum)
            for m in e
        )
        return Scalar(_MSREST_SCALARS[type_name], values or None)
    if type_name in ("iso-8601", "rfc-1123", "duration", "date", "base64", "bytearray"):
        return Scalar("str")
    model = getattr(module, type_name, None)
    if isinstance(model, type) and hasattr(model, "_attribute_map"):
        return model_shape(module, model)
    return ANY


def validate(value: Any, shape: Shape, path: str = "") -> list[str]:
    """What in `value` the shape does not allow: unknown or read-only keys, missing required
    keys, values of the wrong type, strings outside an enum's known values."""
    here = path or "(body)"
    if isinstance(value, Expr):
        known = {"str": str, "int": int, "bool": bool}.get(value.kind)
        if known is None or (isinstance(shape, Scalar) and shape.kind == "any"):
            return []
        wanted = _kind_of(shape)
        fits = wanted == value.kind or (wanted == "float" and value.kind == "int")
        return (
            [] if fits else [f"{here}: {value.text} is a {value.kind}, the schema wants {wanted}"]
        )
    if isinstance(shape, Scalar):
        return _check_scalar(value, shape, here)
    if isinstance(shape, ListOf):
        if not isinstance(value, list):
            return [f"{here}: expected an array, got {value!r}"]
        return [
            e for i, item in enumerate(value) for e in validate(item, shape.item, f"{path}[{i}]")
        ]
    if isinstance(shape, MapOf):
        if not isinstance(value, dict):
            return [f"{here}: expected an object, got {value!r}"]
        return [e for k, v in value.items() for e in validate(v, shape.value, f"{path}.{k}")]
    if not isinstance(value, dict):
        return [f"{here}: expected an object ({shape.name}), got {value!r}"]
    errors = []
    for key, item in value.items():
        spec = shape.fields.get(key)
        where = f"{path}.{key}" if path else key
        if spec is None:
            errors.append(f"{where}: not a property of {shape.name}")
        elif not spec.writable:
            errors.append(f"{where}: read-only in {shape.name}")
        else:
            errors.extend(validate(item, spec.shape(), where))
    for key, spec in shape.fields.items():
        if spec.required and key not in value:
            errors.append(f"{path + '.' if path else ''}{key}: required by {shape.name}, missing")
    return errors


def _kind_of(shape: Shape) -> str:
    if isinstance(shape, Scalar):
        return shape.kind
    return "array" if isinstance(shape, ListOf) else "object"


def _check_scalar(value: Any, shape: Scalar, where: str) -> list[str]:
    types: dict[str, tuple[type, ...]] = {
        "str": (str,), "int": (int,), "float": (int, float), "bool": (bool,)
    }  # fmt: skip
    if shape.kind == "any":
        return []
    wrong_bool = isinstance(value, bool) and shape.kind != "bool"
    if wrong_bool or not isinstance(value, types[shape.kind]):
        return [f"{where}: {value!r} is not a {shape.kind}"]
    if (
        shape.enum
        and isinstance(value, str)
        and value.lower() not in {e.lower() for e in shape.enum}
    ):
        return [f"{where}: {value!r} is none of {sorted(shape.enum)}"]
    return []


def read_path(shape: Shape, names: tuple[str, ...]) -> str | None:
    """None when `a.b.c` can be read from a resource of this shape; else what is wrong. Read-only
    properties count (a template reads them)."""
    for i, name in enumerate(names):
        if not isinstance(shape, Obj):
            return None  # a map, an `any`: nothing more is known
        spec = shape.fields.get(name)
        if spec is None:
            return f"{'.'.join(names[: i + 1])}: not a property of {shape.name}"
        shape = spec.shape()
    return None
