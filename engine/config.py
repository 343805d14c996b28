"""One configuration schema (:mod:`engine.config_schema`: every field has a type, a default
and a help text), loaded and validated here.

Values merge defaults < TOML file < command line (``--set section.key=value``), are
validated once, and the resolved configuration is logged at start. Environment variables
are read here and nowhere else (:func:`env`).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import logging
import os
import tomllib
from pathlib import Path
from types import SimpleNamespace

from engine.config_schema import SCHEMA, Field
from engine.errors import ConfigError

log = logging.getLogger(__name__)


def _config_dir() -> Path:
    """The shipped configurations: the installed package data ``engine.configs`` (setup.cfg
    maps the repository's ``configs/`` there), or ``configs/`` beside the source tree when
    the engine runs uninstalled (``PYTHONPATH=.``)."""
    try:
        return Path(str(importlib.resources.files("engine.configs")))
    except ModuleNotFoundError:
        return Path(__file__).resolve().parent.parent / "configs"


CONFIG_DIR = _config_dir()


_BY_KEY = {f.key: f for f in SCHEMA}


def _coerce(field: Field, value, source: str):
    if field.type is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{source}: {field.key} = {value!r} is not a boolean")
    try:
        out = field.type(value)
        if field.type is int and isinstance(value, float) and value != int(value):
            raise ValueError
    except (TypeError, ValueError):
        raise ConfigError(
            f"{source}: {field.key} = {value!r} is not a valid {field.type.__name__}") from None
    if field.choices and out not in field.choices:
        raise ConfigError(f"{source}: {field.key} = {out!r} is not one of {field.choices}")
    if field.minimum is not None and out < field.minimum:
        raise ConfigError(f"{source}: {field.key} = {out!r} is below {field.minimum}")
    return out


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested dicts -> one dict with dotted keys (``{'a': {'b': 1}}`` -> ``{'a.b': 1}``)."""
    flat = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            flat.update(flatten(v, key + "."))
        else:
            flat[key] = v
    return flat


class Config(SimpleNamespace):
    """Resolved configuration; sections are attributes (``cfg.site.latitude_deg``)."""

    def as_flat(self) -> dict:
        return {f.key: getattr(getattr(self, f.key.split(".")[0]), f.key.split(".")[1])
                for f in SCHEMA}

    def digest(self) -> str:
        """sha256 of the resolved values: recorded in product headers."""
        blob = json.dumps(self.as_flat(), sort_keys=True, default=str).encode()
        return hashlib.sha256(blob).hexdigest()[:16]

    def resolve_path(self, key: str, base: Path | None = None) -> Path:
        """A ``paths.*`` value as an absolute path (relative ones under ``base``)."""
        p = Path(getattr(self.paths, key)).expanduser()
        return p if p.is_absolute() else (base or Path.cwd()) / p


def load(path: str | os.PathLike | None = None, overrides: dict | None = None) -> Config:
    """Merge defaults < TOML file < overrides and validate every value once.

    ``overrides`` maps dotted keys to values (strings from the command line are coerced).
    Unknown keys are an error naming the key, so a typo never silently keeps a default.
    """
    values = {f.key: f.default for f in SCHEMA}
    sources = [("defaults", {})]
    if path is not None:
        p = Path(path)
        try:
            with open(p, "rb") as fh:
                sources.append((str(p), flatten(tomllib.load(fh))))
        except FileNotFoundError:
            raise ConfigError(f"config file {p} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {p} is not valid TOML: {exc}") from None
    sources.append(("command line", dict(overrides or {})))
    for source, flat in sources:
        for key, value in flat.items():
            if key not in _BY_KEY:
                raise ConfigError(f"{source}: unknown configuration key {key!r}")
            values[key] = _coerce(_BY_KEY[key], value, source)
    sections: dict[str, dict] = {}
    for key, value in values.items():
        sec, name = key.split(".", 1)
        sections.setdefault(sec, {})[name] = value
    cfg = Config(**{s: SimpleNamespace(**kv) for s, kv in sections.items()})
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: Config) -> None:
    lo, _, hi = cfg.sim.flux_range_jy.partition(",")
    try:
        if not 0 < float(lo) <= float(hi):
            raise ValueError
    except ValueError:
        raise ConfigError(f"sim.flux_range_jy = {cfg.sim.flux_range_jy!r} must be 'min,max' "
                          "with 0 < min <= max") from None
    if not -90 <= cfg.sim.dec_deg <= 90:
        raise ConfigError(f"sim.dec_deg = {cfg.sim.dec_deg} is not a declination")
    if cfg.image.backend == "wsclean" and cfg.convert.phasing != "single":
        raise ConfigError("image.backend = wsclean needs convert.phasing = single (WSClean "
                          "images one phase centre; meridian phasing has one per integration)")
    if cfg.mosaic.overlap >= cfg.mosaic.size:
        raise ConfigError(f"mosaic.overlap = {cfg.mosaic.overlap} must be below mosaic.size = "
                          f"{cfg.mosaic.size}")
    if cfg.band.channel_width_hz == 0:
        raise ConfigError("band.channel_width_hz must not be 0")


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", ...]`` -> ``{"a.b": "1"}`` with a clear error for a malformed item."""
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        out[key.strip()] = value.strip()
    return out


def describe(cfg: Config) -> str:
    """The resolved configuration as TOML-like text with each field's help."""
    lines, section = [], None
    flat = cfg.as_flat()
    for f in SCHEMA:
        sec, name = f.key.split(".", 1)
        if sec != section:
            lines.append(f"\n[{sec}]")
            section = sec
        lines.append(f"{name} = {json.dumps(flat[f.key])}  # {f.help}")
    return "\n".join(lines).lstrip()


def config_file(name: str) -> Path:
    """A file shipped in configs/ (catalogs, station tables)."""
    p = Path(name)
    return p if p.is_absolute() else CONFIG_DIR / p


def env(name: str, default: str | None = None) -> str | None:
    """The one place the engine reads environment variables."""
    return os.environ.get(name, default)
