"""Each default once: every `default:` of the config schema equals the code's, so which one applies
(Snakemake's validate fills a section's defaults only where the user wrote the section) never matters."""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any

import yaml
from helpers import SCHEMAS

from attnbench import config, jobs, lock, ratchet, stats
from attnbench.settings import TimingSettings
from attnbench.workloads import Shape

SHAPE = {"name": "s", "batch": 1, "heads": 1, "seq": 1, "dim": 1}


def schema_defaults(node: Any, path: str = "") -> dict[str, Any]:
    """Every default in the schema, by its path (properties, $defs and array items)."""
    found = {}
    if isinstance(node, dict):
        if "default" in node:
            found[path] = node["default"]
        for key, child in node.items():
            if key in ("properties", "$defs"):
                for name, sub in child.items():
                    found |= schema_defaults(sub, f"{path}.{name}".lstrip("."))
            elif key == "items":
                found |= schema_defaults(child, f"{path}[]")
    return found


def code_defaults() -> dict[str, Any]:
    """The code's default for each schema path."""
    compare = inspect.signature(stats.compare_shape).parameters
    settings = {f.name: f.default for f in dataclasses.fields(TimingSettings)}
    return {
        "device": config.DEFAULTS["device"],
        "sanitize_crashes": config.DEFAULTS["sanitize_crashes"],
        "fail_on_failed_candidates": config.DEFAULTS["fail_on_failed_candidates"],
        "dtype": config.DEFAULTS["dtype"],
        "mode": config.DEFAULTS["mode"],
        "shapes[].causal": Shape.from_config(SHAPE).causal,
        "calibrate.reuse": jobs.CALIBRATE_REUSE,
        **{f"lock.{key}": value for key, value in lock.DEFAULT_LOCK.items()},
        **{f"stats.{key}": compare[key].default for key in ("alpha", "threshold", "resolution")},
        **{f"ratchet.{key}": value for key, value in ratchet.DEFAULTS.items()},
        **{f"timing.{key}": value for key, value in settings.items()},
    }


def test_every_schema_default_is_the_codes():
    found = schema_defaults(yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text()))
    assert found == code_defaults()


def test_the_ratchet_and_the_comparison_share_one_alpha():
    assert ratchet.DEFAULTS["alpha"] == inspect.signature(stats.compare_shape).parameters["alpha"].default == stats.ALPHA
