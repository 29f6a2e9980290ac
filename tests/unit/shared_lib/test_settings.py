"""shared_lib.settings reads every settings class of the shop exactly as pydantic-settings read it.

Each class is also built from its own module's text with pydantic-settings' BaseSettings and
SettingsConfigDict in place of the shop's (pydantic-settings stays a dev dependency for this), and both are
constructed in the same environment: over every field, each name it is read by (as declared and lower-cased),
valid, invalid, empty, padded and out-of-range values, all fields wrong at once, and keyword arguments by
name, by alias and in another case, alone and over the environment. The outcome must be the same: the same
values of the same types, or a ValidationError with the same title and the same errors.
"""

from __future__ import annotations

import functools
import itertools
import os
import sys
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pydantic_settings
import pytest
from pydantic import AliasChoices, AliasPath, BaseModel, Field, SecretStr, ValidationError

from shared_lib import settings as shop_settings

ROOT = Path(__file__).resolve().parents[3]
SETTINGS_FILES = {
    "CartSettings": "functions/cart/settings.py",
    "LomsSettings": "functions/loms/settings.py",
    "NotifierSettings": "functions/notifier/settings.py",
    "OrdersSettings": "functions/orders/settings.py",
    "ProductSettings": "functions/product/settings.py",
    "ServerSettings": "functions/server_settings.py",
    "ObservabilitySettings": "shared_lib/observability/settings.py",
}
SHOP_IMPORT = "from shared_lib.settings import BaseSettings, SettingsConfigDict"
TWIN_IMPORT = "from pydantic_settings import BaseSettings, SettingsConfigDict"

TEXTS: dict[type, list[str]] = {
    str: ["x", "", " padded ", "ünï"],
    int: ["5", " 7 ", "0", "-1", "1_000", "2.0", "2.5", "1e3", "abc", "", "99999999999999999999999"],
    float: ["0.5", " 2 ", "0", "-1", "1e-3", "nan", "inf", "x", ""],
    bool: ["true", "0", "YES", "off", "maybe", ""],
    Path: ["/tmp/x", "relative/y", ""],
    SecretStr: ["s3cret", ""],
}


@functools.cache
def load(class_name: str, twin: bool) -> type[BaseModel]:
    """The class from its module; with `twin`, the same module text on pydantic-settings."""
    path = ROOT / SETTINGS_FILES[class_name]
    text = path.read_text()
    assert SHOP_IMPORT in text, f"{path} no longer imports shared_lib.settings as expected"
    name = f"settings_twin_{path.stem}_{twin}_{class_name}"
    module = types.ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # pydantic resolves the postponed annotations through it
    exec(compile(text.replace(SHOP_IMPORT, TWIN_IMPORT) if twin else text, str(path), "exec"), vars(module))
    cls = vars(module)[class_name]
    assert isinstance(cls, type) and issubclass(cls, BaseModel)
    base = pydantic_settings.BaseSettings if twin else shop_settings.BaseSettings
    assert issubclass(cls, base)
    return cls


def texts(annotation: Any) -> list[str]:
    origin = typing.get_origin(annotation)
    if origin is Literal:
        choices = [str(a) for a in typing.get_args(annotation)]
        return [*choices, choices[0].upper(), f" {choices[0]}", "bogus", ""]
    if origin is not None:  # X | None
        return [t for a in typing.get_args(annotation) if a is not type(None) for t in texts(a)]
    return TEXTS[annotation]


def names(cls: type[BaseModel], field_name: str) -> list[str]:
    """The variables a field is read from (each as declared and lower-cased)."""
    field = cls.model_fields[field_name]
    alias = field.validation_alias
    if isinstance(alias, AliasChoices):
        declared = [c for c in alias.choices if isinstance(c, str)]
    elif isinstance(alias, str):
        declared = [alias]
    else:
        declared = [str(cls.model_config.get("env_prefix", "")) + field_name.upper()]
    return [v for n in declared for v in (n, n.lower())]


def outcome(cls: type[BaseModel], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    try:
        made = cls(**kwargs)
    except ValidationError as error:
        return ("refused", error.title, error.json(include_url=False))
    return ("made", {k: (type(v), v) for k, v in made.model_dump().items()})


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No variable any settings class reads, in any case."""
    classes = [load(c, False) for c in SETTINGS_FILES]
    read = {n.lower() for c in classes for f in c.model_fields for n in names(c, f)}
    for key in list(os.environ):
        if key.lower() in read:
            monkeypatch.delenv(key)
    yield monkeypatch


@pytest.mark.parametrize("class_name", sorted(SETTINGS_FILES))
def test_each_variable_alone_is_read_as_pydantic_settings_reads_it(
    clean_env: pytest.MonkeyPatch, class_name: str
) -> None:
    shop, twin = load(class_name, False), load(class_name, True)
    assert outcome(shop, {}) == outcome(twin, {})
    compared = 0
    for field_name, field in shop.model_fields.items():
        for variable, text in itertools.product(names(shop, field_name), texts(field.annotation)):
            with clean_env.context() as env:
                env.setenv(variable, text)
                assert outcome(shop, {}) == outcome(twin, {}), (variable, text)
                compared += 1
    assert compared >= 10 * len(shop.model_fields)


@pytest.mark.parametrize("class_name", sorted(SETTINGS_FILES))
def test_every_field_wrong_at_once_gives_the_same_errors(
    clean_env: pytest.MonkeyPatch, class_name: str
) -> None:
    shop, twin = load(class_name, False), load(class_name, True)
    for field_name in shop.model_fields:
        clean_env.setenv(names(shop, field_name)[0], "not a valid value ...")
    refused = outcome(shop, {})
    assert refused == outcome(twin, {})
    if any(f.annotation is not str for f in shop.model_fields.values()):
        assert refused[0] == "refused"


@pytest.mark.parametrize("class_name", sorted(SETTINGS_FILES))
def test_keyword_arguments_over_the_environment_as_pydantic_settings(
    clean_env: pytest.MonkeyPatch, class_name: str
) -> None:
    shop, twin = load(class_name, False), load(class_name, True)
    for field_name, field in shop.model_fields.items():
        variable = names(shop, field_name)[0]
        keys = {field_name, field_name.upper(), *names(shop, field_name)}
        for key, text, environment in itertools.product(
            sorted(keys), texts(field.annotation)[:4], (None, texts(field.annotation)[-1])
        ):
            with clean_env.context() as env:
                if environment is not None:
                    env.setenv(variable, environment)
                assert outcome(shop, {key: text}) == outcome(twin, {key: text}), (key, text, environment)
    assert outcome(shop, {"no_such_setting": 1}) == outcome(twin, {"no_such_setting": 1})


def test_an_environment_with_duplicate_cases_and_both_alias_choices(clean_env: pytest.MonkeyPatch) -> None:
    shop, twin = load("ObservabilitySettings", False), load("ObservabilitySettings", True)
    clean_env.setenv("OTEL_SERVICE_NAME", "from-otel")
    assert outcome(shop, {}) == outcome(twin, {})
    assert shop().model_dump()["service_name"] == "from-otel"
    clean_env.setenv("shop_service_name", "from-shop")  # the first choice wins, in any case
    assert outcome(shop, {}) == outcome(twin, {})
    assert shop().model_dump()["service_name"] == "from-shop"
    for kwargs in ({"OTEL_SERVICE_NAME": "k"}, {"otel_service_name": "k"}, {"service_name": "k"}):
        assert outcome(shop, kwargs) == outcome(twin, kwargs), kwargs


class Declared(shop_settings.BaseSettings):
    model_config = shop_settings.SettingsConfigDict(env_prefix="DECLARED_", env_ignore_empty=True)

    plain: int = Field(1, ge=0)
    aliased: str = Field("a", validation_alias=AliasChoices("DECLARED_ONE", "DECLARED_TWO"))
    optional: Path | None = None


def test_a_declared_class_reads_its_prefix_its_aliases_and_ignores_empty(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("declared_plain", "3")
    clean_env.setenv("DECLARED_TWO", "two")
    clean_env.setenv("DECLARED_OPTIONAL", "")
    assert Declared().model_dump() == {"plain": 3, "aliased": "two", "optional": None}
    assert Declared(plain=4).plain == 4
    clean_env.setenv("DECLARED_PLAIN", "-1")
    with pytest.raises(ValidationError) as refused:
        Declared()
    assert [e["loc"] for e in refused.value.errors()] == [("plain",)]


@pytest.mark.parametrize(
    ("annotation", "field"),
    [
        (list[str], Field(default_factory=list)),
        (dict[str, int], Field(default_factory=dict)),
        (str, Field("", validation_alias=AliasPath("A", 0))),
        (int | str, Field(0)),
    ],
)
def test_a_field_read_otherwise_by_pydantic_settings_is_refused_at_definition(
    annotation: Any, field: Any
) -> None:
    with pytest.raises(TypeError):
        type(
            "Refused",
            (shop_settings.BaseSettings,),
            {"__annotations__": {"value": annotation}, "value": field, "__module__": __name__},
        )


def test_name_population_settings_are_refused() -> None:
    with pytest.raises(TypeError):
        type(
            "Refused",
            (shop_settings.BaseSettings,),
            {"model_config": shop_settings.SettingsConfigDict(validate_by_name=True), "__module__": __name__},
        )
