"""A config dataclass as the JSON Schema the seed's registry gives it.

The seed turns each plugin's config dataclass into a schema with
``cjm_fasthtml_jsonschema.core.dataclass.dataclass_to_jsonschema``. When that
package is installed (every seed application has it), the registry calls it,
so schemas are the seed's byte for byte; otherwise it calls
:func:`dataclass_to_jsonschema` here, which builds the same schema:

* top level: ``name`` and ``title`` (``__schema_name__`` / ``__schema_title__``
  or the class name), ``description`` (``__schema_description__``, else the
  class docstring, else ``""``), ``"type": "object"``, ``properties``;
* each field: its type (``str`` string, ``int`` integer, ``float`` number,
  ``bool`` boolean, ``List[X]`` an array of X, ``Optional[X]`` X's type with
  ``"null"`` added, anything else string), the field metadata keys
  ``title``, ``description``, ``minimum``, ``maximum``, ``enum``,
  ``minLength``, ``maxLength``, ``pattern``, ``format``, and its default
  (a ``default_factory`` is called).

tests/test_dataclass_schema.py compares the two on the same dataclasses.
"""

import dataclasses
import typing
from typing import Any, Dict

__all__ = ["dataclass_to_jsonschema", "FIELD_METADATA_KEYS"]

#: Field metadata keys copied into a property's schema, in this order.
FIELD_METADATA_KEYS = (
    "title",
    "description",
    "minimum",
    "maximum",
    "enum",
    "minLength",
    "maxLength",
    "pattern",
    "format",
)

_SCALARS = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _type_schema(tp: Any) -> Dict[str, Any]:
    """The schema of one annotation."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return {"type": "array", "items": _type_schema(args[0] if args else str)}
    none = type(None)
    if origin is none or (origin and none in args):
        rest = [a for a in args if a is not none]
        if not rest:
            return {"type": "null"}
        inner = _type_schema(rest[0])
        inner["type"] = [inner["type"], "null"]
        return inner
    return {"type": _SCALARS.get(tp, "string")}


def dataclass_to_jsonschema(cls: type) -> Dict[str, Any]:
    """The JSON Schema of config dataclass ``cls`` (raises ``TypeError``
    when ``cls`` is not a dataclass)."""
    if not hasattr(cls, "__dataclass_fields__"):
        raise TypeError(f"{cls} is not a dataclass")
    properties: Dict[str, Any] = {}
    schema = {
        "name": getattr(cls, "__schema_name__", cls.__name__),
        "title": getattr(cls, "__schema_title__", cls.__name__),
        "description": getattr(cls, "__schema_description__", cls.__doc__ or ""),
        "type": "object",
        "properties": properties,
    }
    try:
        hints = typing.get_type_hints(cls)
    except Exception:
        hints = {}
    for f in dataclasses.fields(cls):
        prop = _type_schema(hints.get(f.name, str))
        meta = f.metadata or {}
        prop.update((k, meta[k]) for k in FIELD_METADATA_KEYS if k in meta)
        if f.default is not dataclasses.MISSING:
            prop["default"] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            prop["default"] = f.default_factory()
        properties[f.name] = prop
    return schema


def seed_converter():
    """The converter the seed itself uses when it is installed, else ours."""
    try:
        from cjm_fasthtml_jsonschema.core.dataclass import dataclass_to_jsonschema as theirs
    except Exception:
        return dataclass_to_jsonschema
    return theirs
