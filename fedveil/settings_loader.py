"""One strict settings loader for every command (server, client, audit).

Why one: settings used to be written three times, each with its own TOML reader, its own
type checks and its own idea of what "strict" meant, so `dimension = "1000"` was refused by
one command and quietly coerced by another. Here every settings model is a frozen pydantic
model that refuses unknown keys and does no coercion ("3" is not 3), and every refusal
reaches the user as one ConfigError line that names the dotted key, what is wrong and the
value given (`round.dimension: must be >= 1, got 0`), never a pydantic dump or traceback.

pydantic only, no heavier import: the base install (without torch) loads settings too.
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails

from fedveil.errors import ConfigError

__all__ = [
    "StrictSettings",
    "apply_overrides",
    "check_values",
    "config_error",
    "load_settings",
    "read_toml",
]


class StrictSettings(BaseModel):
    """Base of every settings model: frozen, no unknown keys, no type coercion.

    An int is still accepted for a float field (TOML `clip = 1` means 1.0). Fields that
    TOML can only spell as strings (paths, enums, hex bytes) opt out of strictness one by
    one, with `Field(strict=False)` or a before-validator, so the exception is visible where
    it is made. Constructing a model directly raises the same one-line ConfigError as
    loading it, so code and tests see one kind of error.
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, strict=True, allow_inf_nan=False, validate_default=False
    )
    # The dotted prefix errors name when the model is built directly (e.g. "round").
    settings_where: ClassVar[str] = ""

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, self.settings_where, type(self)) from None

    # Tells pydantic this __init__ only wraps its own: model_validate keeps validating
    # field by field (with locations) instead of calling it.
    __init__.__pydantic_base_init__ = True  # type: ignore[attr-defined]

    def replace(self, **changes: Any) -> Self:
        """A copy with `changes`, validated again (dataclasses.replace for settings)."""
        values = {name: getattr(self, name) for name in type(self).model_fields}
        values.update(changes)
        return load_settings(type(self), values, self.settings_where)


M = TypeVar("M", bound=BaseModel)


def read_toml(path: Path, what: str) -> dict[str, object]:
    """The parsed TOML file `path`; ConfigError naming the file (`what` says which file it
    is, e.g. "config file") when it is missing, unreadable or not TOML."""
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{what} {path} does not exist") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the {what} {path}: {exc.strerror or exc}") from None
    try:
        return tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path} is not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None


def apply_overrides(values: Mapping[str, object], flags: Mapping[str, object]) -> dict[str, object]:
    """`values` (from TOML) with every flag that was given on top: a flag whose value is
    None was not given and leaves the TOML value (or the default) alone."""
    merged = dict(values)
    merged.update({key: value for key, value in flags.items() if value is not None})
    return merged


def check_values(model: type[BaseModel], values: Mapping[str, object], where: str) -> None:
    """Check each key of `values` (a TOML table) with the model's own field checks, before
    flags may replace some of them: a broken config file is refused even where a flag hides
    the broken value. Keys `values` lacks, and checks across keys, are left to
    `load_settings` on the merged values."""
    try:
        model.model_validate(dict(values))
    except ValidationError as exc:
        for error in exc.errors(include_url=False):
            loc = error["loc"]
            if loc and loc[0] in values and error["type"] != "missing":
                raise _config_error(error, where, model) from None


def load_settings(model: type[M], values: Mapping[str, object], where: str) -> M:
    """`values` validated as `model`; ConfigError with one line naming `where.key`."""
    try:
        return model.model_validate(dict(values))
    except ValidationError as exc:
        raise config_error(exc, where, model) from None


def config_error(
    exc: ValidationError, where: str, model: type[BaseModel] | None = None
) -> ConfigError:
    """The first error of `exc` as one ConfigError line: `where.key: what, got value`.

    A validator that raised ConfigError itself already wrote the whole line (it names its
    key, and cross-field checks name several): that line is kept as it is.
    """
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic never raises an empty error
        return ConfigError(f"{where}: invalid settings")
    return _config_error(errors[0], where, model)


def _config_error(error: ErrorDetails, where: str, model: type[BaseModel] | None) -> ConfigError:
    original = (error.get("ctx") or {}).get("error")
    if isinstance(original, ConfigError):
        return ConfigError(str(original))
    key = ".".join(str(part) for part in (where, *error["loc"]) if str(part))
    known = _known_keys(model, error)
    return ConfigError(f"{key}: {_describe(error, known)}")


def _known_keys(model: type[BaseModel] | None, error: ErrorDetails) -> Iterable[str]:
    """The keys the model at the error's location knows (for an unknown key's message)."""
    if error["type"] != "extra_forbidden" or model is None:
        return ()
    for part in error["loc"][:-1]:
        field = model.model_fields.get(str(part))
        inner = field.annotation if field is not None else None
        if not (isinstance(inner, type) and issubclass(inner, BaseModel)):
            return ()
        model = inner
    return tuple(model.model_fields)


def _describe(error: ErrorDetails, known: Iterable[str]) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    value = error.get("input")
    got = f", got {value!r}"
    if kind == "missing":
        return "is required"
    if kind == "extra_forbidden":
        names = ", ".join(sorted(known))
        return "unknown key" + (f"; known keys: {names}" if names else "")
    bounds = {
        "greater_than_equal": ">= {ge}",
        "greater_than": "> {gt}",
        "less_than_equal": "<= {le}",
        "less_than": "< {lt}",
    }
    if kind in bounds:
        return f"must be {bounds[kind].format(**ctx)}{got}"
    wanted = _WANTED.get(kind)
    if wanted is not None:
        fix = ""
        if isinstance(value, str) and kind in ("int_type", "float_type"):
            try:
                float(value)
                fix = " (write the number without quotes)"
            except ValueError:
                pass
        return f"must be {wanted}{got}{fix}"
    if kind == "enum":
        return f"must be one of {ctx.get('expected', '')}{got}"
    if kind == "literal_error":
        return f"must be {ctx.get('expected', '')}{got}"
    message = str(error.get("msg", "invalid value")).removeprefix("Value error, ")
    return f"{message}{got}"


_WANTED = {
    "bool_type": "true or false",
    "int_type": "an integer",
    "float_type": "a number (int or float)",
    "finite_number": "a finite number",
    "string_type": "a string",
    "bytes_type": "bytes",
    "path_type": "a path string",
    "list_type": "a list",
    "tuple_type": "a list",
    "dict_type": "a table",
    "model_type": "a table",
    "model_attributes_type": "a table",
    "int_from_float": "an integer",
}
