"""Settings read from the environment: the base of every settings class of the shop (one per service, the
server's, and shared_lib.observability's).

`BaseSettings` reads a class's fields from the environment as pydantic-settings' class of that name did for
these classes, without importing pydantic-settings (its import cost each function's cold start ~30 ms of
CPU: asyncio, python-dotenv, its CLI and cloud sources, none of them used). A class declares its fields as
any pydantic model does, and `model_config = SettingsConfigDict(env_prefix=..., ...)`:

- a field is read from the variable `env_prefix + field name`, or, when it has a `validation_alias`, from
  that name (or from the first of an `AliasChoices` of names that is set), without the prefix;
- names match case-insensitively unless `case_sensitive=True`; with `env_ignore_empty=True` an empty
  variable counts as unset;
- keyword arguments win over the environment, matched to a field as pydantic-settings matches them
  (case-insensitively; through its alias when it has one);
- pydantic validates the result, defaults included (`validate_default`), unknown keyword arguments refused
  unless `extra` says otherwise: a bad value is pydantic's `ValidationError`, as before.

Only what a variable holding one value needs is supported. A field that pydantic-settings would read
differently (an `AliasPath`, a list, dict, set or model that it decodes from JSON) is
refused when its class is defined, so no class is read differently without notice.
tests/unit/shared_lib/test_settings.py reads every settings class of the shop both ways, from the same class
text, across valid, invalid, empty and differently-cased variables and keyword arguments.
"""

from __future__ import annotations

import os
import types
import typing
from pathlib import Path
from typing import Any, ClassVar

from pydantic import AliasChoices, BaseModel, ConfigDict, SecretStr
from pydantic.fields import FieldInfo

# what a field may be: one value parsed from one variable's text by pydantic (or a Literal of such values,
# or None besides one of them)
SCALARS = (str, int, float, bool, Path, SecretStr)


class SettingsConfigDict(ConfigDict, total=False):
    """pydantic's model configuration and the environment's: the keys of pydantic-settings' own
    SettingsConfigDict that the shop uses."""

    env_prefix: str
    case_sensitive: bool
    env_ignore_empty: bool


class BaseSettings(BaseModel):
    """A pydantic model whose fields not given as keyword arguments come from the environment."""

    # pydantic-settings' defaults for these keys
    model_config: ClassVar[SettingsConfigDict] = SettingsConfigDict(
        extra="forbid",
        arbitrary_types_allowed=True,
        validate_default=True,
        case_sensitive=False,
        env_prefix="",
        env_ignore_empty=False,
        protected_namespaces=(
            "model_validate",
            "model_dump",
            "settings_cached",
            "settings_clear_cache",
            "settings_customise_sources",
        ),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**settings_values(type(self), values))

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        for name, field in cls.model_fields.items():
            refuse_unsupported(cls, name, field)
        for key in ("validate_by_name", "populate_by_name", "validate_by_alias"):
            if key in cls.model_config:
                raise TypeError(f"{cls.__name__}: {key} is not supported by shared_lib.settings")


def refuse_unsupported(cls: type, name: str, field: FieldInfo) -> None:
    alias = field.validation_alias
    names_only = isinstance(alias, AliasChoices) and all(isinstance(c, str) for c in alias.choices)
    if alias is not None and not isinstance(alias, str) and not names_only:
        raise TypeError(f"{cls.__name__}.{name}: only a name or AliasChoices of names as validation_alias")
    if not is_scalar(field.annotation):
        raise TypeError(f"{cls.__name__}.{name}: {field.annotation!r} is not read from one value")


def is_scalar(annotation: Any) -> bool:
    if annotation in SCALARS:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return all(isinstance(a, str | int | bool) for a in typing.get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return len(members) == 1 and is_scalar(members[0])
    return False


def alias_names(field: FieldInfo) -> list[str]:
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        return [c for c in alias.choices if isinstance(c, str)]
    return [alias] if isinstance(alias, str) else []


def settings_values(cls: type[BaseSettings], given: dict[str, Any]) -> dict[str, Any]:
    """What pydantic validates for `cls(**given)`: the environment's values under the names pydantic reads
    them by, overridden by the keyword arguments (pydantic-settings' env and init sources, merged)."""
    config = cls.model_config
    case_sensitive = bool(config.get("case_sensitive", False))
    ignore_empty = bool(config.get("env_ignore_empty", False))
    prefix = config.get("env_prefix", "")

    def normal(name: str) -> str:
        return name if case_sensitive else name.lower()

    environ = {normal(k): v for k, v in os.environ.items() if not (ignore_empty and v == "")}
    given_by_normal: dict[str, list[str]] = {}
    for key in given:
        given_by_normal.setdefault(normal(key), []).append(key)
    unmatched = set(given)
    values: dict[str, Any] = {}
    for field_name, field in cls.model_fields.items():
        aliases = alias_names(field)
        names = aliases or [field_name]
        for env_key, variable in [(a, a) for a in aliases] or [(field_name, prefix + field_name)]:
            value = environ.get(normal(variable))
            if value is not None:
                values[env_key] = value
                break
        matched = [key for n in names for key in given_by_normal.get(normal(n), []) if key in unmatched]
        if not matched:
            continue
        unmatched.difference_update(matched)
        exact = next((n for n in names if n in given), None)
        if exact is None:  # under the field's first name, over what the environment gave under it
            values[names[0]] = given[matched[0]]
        else:  # under the very name given, and nothing of the environment's for this field
            for name in names:
                values.pop(name, None)
            values[exact] = given[matched[0]]
    values.update({key: given[key] for key in given if key in unmatched})
    return values
