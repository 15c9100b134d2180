"""Model presets and named sweeps (attnbench.presets, presets.yaml): every preset loads and is
consistent, apply() merges with the shape's own keys winning, unknown names suggest the close ones, and
a few values match the models' published configurations; every sweep loads, its axes are lists of
values the config accepts, each expands with a preset into shapes the config takes, and check_sweep
refuses what no shape could measure."""

from __future__ import annotations

import itertools
import math
from importlib import resources

import jsonschema
import pytest
import yaml
from helpers import CONFIG, SCHEMAS

from attnbench import capacity, device, presets
from attnbench import config as run_config
from attnbench.workloads import Shape

PRESETS = presets.load()
SWEEPS = presets.load_sweeps()


def test_the_yaml_ships_inside_the_package():
    # Loaded as package data (not from the source tree), so it must sit next to presets.py.
    assert resources.files("attnbench").joinpath("presets.yaml").is_file()


def test_the_required_models_are_there():
    assert {
        "llama-3.1-8b",
        "llama-3.1-70b",
        "mistral-7b-v0.1",
        "gemma-2-9b",
        "gemma-2-27b",
        "qwen2.5-7b",
        "deepseek-v3",
    } <= set(presets.names())
    assert presets.names() == sorted(PRESETS)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_is_consistent(name):
    preset = PRESETS[name]
    assert set(preset) <= set(presets.GEOMETRY + presets.META)
    assert preset["heads"] % preset["kv_heads"] == 0
    for key in ("dim", "dim_v"):
        if key in preset:
            assert 0 < preset[key] <= 256
    assert preset["source"].strip() and "https://" in preset["source"]
    if "window" in preset:
        left, right = preset["window"]
        assert left >= 0 and right >= 0
    for key in ("softcap", "scale"):
        if key in preset:
            assert isinstance(preset[key], float) and preset[key] > 0
    if "scale" in preset:
        assert not math.isclose(preset["scale"], preset["dim"] ** -0.5), "scale is set only where it differs"
    if "dim_v" in preset:
        assert preset["dim_v"] != preset["dim"], "dim_v is set only where it differs"


def test_published_values():
    llama = PRESETS["llama-3.1-8b"]
    assert (llama["heads"], llama["kv_heads"], llama["dim"]) == (32, 8, 128)
    assert "window" not in llama and "softcap" not in llama and "scale" not in llama
    assert (PRESETS["llama-3.1-70b"]["heads"], PRESETS["llama-3.1-70b"]["kv_heads"]) == (64, 8)

    assert PRESETS["mistral-7b-v0.1"]["window"] == [4095, 0]  # sliding_window 4096, the diagonal included

    gemma9 = PRESETS["gemma-2-9b"]
    assert (gemma9["heads"], gemma9["kv_heads"], gemma9["dim"]) == (16, 8, 256)
    assert gemma9["softcap"] == 50.0 and gemma9["window"] == [4095, 0]
    assert "scale" not in gemma9  # query_pre_attn_scalar 256 = head_dim: the default 1/sqrt(dim)
    assert "window" not in PRESETS["gemma-2-9b-global"] and PRESETS["gemma-2-9b-global"]["softcap"] == 50.0
    gemma27 = PRESETS["gemma-2-27b"]
    assert (gemma27["heads"], gemma27["kv_heads"], gemma27["dim"]) == (32, 16, 128)
    assert math.isclose(gemma27["scale"], 1 / math.sqrt(144))  # query_pre_attn_scalar 144

    qwen = PRESETS["qwen2.5-7b"]
    assert (qwen["heads"], qwen["kv_heads"], qwen["dim"]) == (28, 4, 128)

    deepseek = PRESETS["deepseek-v3"]
    assert (deepseek["heads"], deepseek["kv_heads"]) == (128, 128)  # MLA, prefill form
    assert (deepseek["dim"], deepseek["dim_v"]) == (128 + 64, 128)
    mscale = 0.1 * 1.0 * math.log(40) + 1.0  # rope_scaling: factor 40, mscale_all_dim 1.0
    assert math.isclose(deepseek["scale"], 192**-0.5 * mscale**2)


def test_load_returns_a_copy():
    first = presets.load()
    first["llama-3.1-8b"]["heads"] = 1
    first["mistral-7b-v0.1"]["window"][0] = 1
    again = presets.load()
    assert again["llama-3.1-8b"]["heads"] == 32 and again["mistral-7b-v0.1"]["window"] == [4095, 0]


def test_apply_replaces_the_preset_by_its_geometry():
    shape = {"name": "llama8b_s8192", "preset": "llama-3.1-8b", "batch": 1, "seq": 8192, "causal": True}
    out = presets.apply(shape)
    assert out == {
        "name": "llama8b_s8192",
        "heads": 32,
        "kv_heads": 8,
        "dim": 128,
        "batch": 1,
        "seq": 8192,
        "causal": True,
    }
    assert list(out)[:4] == ["name", "heads", "kv_heads", "dim"]  # in the place `preset` held
    assert "preset" in shape  # the shape given is left alone


def test_apply_leaves_source_and_notes_out():
    out = presets.apply({"name": "g", "preset": "gemma-2-27b", "batch": 1, "seq": 4096})
    assert "source" not in out and "notes" not in out
    assert out["softcap"] == 50.0 and out["window"] == [4095, 0] and math.isclose(out["scale"], 1 / 12)


def test_the_shapes_own_keys_win():
    out = presets.apply({"name": "mqa", "preset": "llama-3.1-8b", "kv_heads": 1, "dim": 64, "seq": 512})
    assert (out["heads"], out["kv_heads"], out["dim"]) == (32, 1, 64)


def test_a_null_in_the_shape_drops_the_presets_value():
    out = presets.apply({"name": "full", "preset": "mistral-7b-v0.1", "window": None, "seq": 512})
    assert "window" not in out and out["heads"] == 32
    # A null for a field the preset lacks is dropped too: null means "not set", never a value.
    assert "softcap" not in presets.apply({"name": "x", "preset": "llama-3.1-8b", "softcap": None})


def test_apply_returns_fresh_lists():
    out = presets.apply({"name": "m", "preset": "mistral-7b-v0.1"})
    out["window"][0] = 7
    assert presets.apply({"name": "m", "preset": "mistral-7b-v0.1"})["window"] == [4095, 0]


def test_a_shape_without_a_preset_comes_back_as_a_copy():
    shape = {"name": "plain", "batch": 1, "heads": 8, "seq": 128, "dim": 64, "window": None}
    out = presets.apply(shape)
    assert out == shape and out is not shape


@pytest.mark.parametrize(
    ("name", "suggested"),
    [("llama-3.1-8", "llama-3.1-8b"), ("Gemma-2-9B", "gemma-2-9b"), ("deepseek-v2", "deepseek-v3")],
)
def test_an_unknown_preset_suggests_the_close_names(name, suggested):
    with pytest.raises(ValueError, match="unknown preset") as error:
        presets.apply({"name": "s", "preset": name, "batch": 1, "seq": 128})
    message = str(error.value)
    assert f"did you mean {suggested!r}" in message or f"or {suggested!r}" in message
    for known in presets.names():
        assert known in message


@pytest.mark.parametrize("name", ["nothing-like-it", 7, None])
def test_an_unknown_preset_without_close_names_lists_them_all(name):
    with pytest.raises(ValueError) as error:
        presets.apply({"name": "s", "preset": name})
    assert "did you mean" not in str(error.value)
    assert ", ".join(presets.names()) in str(error.value)


GOOD = {"heads": 8, "kv_heads": 2, "dim": 64, "source": "https://example.org/config.json"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"head_dim": 64}, "unknown fields"),
        ({"source": None}, "source"),
        ({"source": "  "}, "source"),
        ({"kv_heads": 3}, "not a multiple"),
        ({"dim": 512}, "over 256"),
        ({"dim_v": 0}, "dim_v must be a positive integer"),
        ({"heads": True}, "heads must be a positive integer"),
        ({"heads": 8.0}, "heads must be a positive integer"),
        ({"window": [4095]}, "window"),
        ({"window": [-1, 0]}, "window"),
        ({"window": None}, "window"),
        ({"softcap": "50"}, "softcap"),
        ({"scale": 0}, "scale"),
        ({"alibi": "yes"}, "alibi"),
        ({"notes": 3}, "notes"),
    ],
)
def test_check_refuses_bad_presets(change, message):
    preset = {**GOOD, **change}
    with pytest.raises(presets.PresetError, match=message):
        presets.check("bad", preset)


def test_check_requires_the_geometry_and_a_source():
    with pytest.raises(presets.PresetError, match="missing kv_heads, source"):
        presets.check("bad", {"heads": 8, "dim": 64})


def test_check_normalises_numbers():
    out = presets.check("ok", {**GOOD, "softcap": 30, "scale": 1, "window": [15, 0], "alibi": False})
    assert out["softcap"] == 30.0 and isinstance(out["softcap"], float) and isinstance(out["scale"], float)


def test_parse_refuses_a_file_without_its_models():
    for data in (None, [], {}, [GOOD], {"sweeps": {}}, {"presets": {"x": GOOD}}):
        with pytest.raises(presets.PresetError, match="must have a models: section"):
            presets.parse(data)
    for models in ({}, [GOOD], None):
        with pytest.raises(presets.PresetError, match="models: must map preset names"):
            presets.parse({"models": models})
    with pytest.raises(presets.PresetError, match="names are text"):
        presets.parse({"models": {3: GOOD}})
    with pytest.raises(presets.PresetError, match=r"unknown sections \['extra'\]"):
        presets.parse({"models": {"ok": GOOD}, "extra": {}})
    assert presets.parse({"models": {"ok": GOOD}}) == {"ok": GOOD}


def _file_text():
    return yaml.safe_load(resources.files("attnbench").joinpath("presets.yaml").read_text(encoding="utf-8"))


def test_the_yaml_parses_the_same_as_load():
    assert presets.parse(_file_text()) == PRESETS
    assert presets.parse_sweeps(_file_text()) == SWEEPS


# Sweeps -------------------------------------------------------------------------------------------


def test_the_required_sweeps_are_there():
    assert {
        "decode-serving",
        "decode-long-context",
        "speculative-decode",
        "prefill",
        "prefill-packed",
    } <= set(presets.sweep_names())
    assert presets.sweep_names() == sorted(SWEEPS)
    assert not set(presets.sweep_names()) & set(presets.names()), "sweeps and models live apart"


def _combinations(axes):
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_sweep_is_lists_of_valid_values_with_a_source(name):
    axes = presets.sweep(name)
    assert axes and set(axes) <= set(presets.SWEEP_KEYS)
    assert list(axes) == [k for k in SWEEPS[name] if k in presets.SWEEP_KEYS]  # the file's order: shape names
    for key, values in axes.items():
        assert isinstance(values, list) and values, key
        assert all(values.count(v) == 1 for v in values), f"{key} repeats a value"
    assert 2 <= len(_combinations(axes)) <= 10, "a sweep is a sensible default GPU run"
    entry = SWEEPS[name]
    assert set(entry) - set(axes) <= set(presets.META) and "https://" in entry["source"]
    # every value is one the config schema takes for that key
    schema = yaml.safe_load((SCHEMAS / "config.schema.yaml").read_text())["$defs"]["shapes"]["items"][
        "properties"
    ]
    for key, values in axes.items():
        for value in values:
            jsonschema.validate(value, schema[key])


def test_the_sweeps_hold_the_values_asked_for():
    serving = presets.sweep("decode-serving")
    assert serving["page_size"] == [16] and 1 in serving["batch"] and 128 in serving["batch"]
    assert all(set(c) >= {"min", "max", "mean"} for c in serving["cache_lens"])
    contiguous = presets.sweep("decode-serving-contiguous")
    assert "page_size" not in contiguous  # the built-ins read only a contiguous cache
    assert contiguous == {k: v for k, v in serving.items() if k != "page_size"}
    assert presets.sweep("decode-long-context")["batch"] == [1, 8]
    assert all(32768 <= c["mean"] <= 131072 for c in presets.sweep("decode-long-context")["cache_lens"])
    speculative = presets.sweep("speculative-decode")
    assert speculative["seq"] == [4] and "cache_lens" in speculative
    assert presets.sweep("prefill") == {
        "batch": [1],
        "seq": [1024, 2048, 4096, 8192, 16384],
        "causal": [True],
    }
    assert all(d["total"] == 16384 for d in presets.sweep("prefill-packed")["seq_lens"])


@pytest.fixture
def cuda_usable(monkeypatch):
    """A GPU, and memory enough for every sweep's largest shape: the capacity check at parse is
    tested in test_config; here only the expansion is."""
    monkeypatch.setattr(device, "cuda_unusable_reason", lambda: None)
    monkeypatch.setattr(capacity, "available", lambda on: (1 << 50, "this test's host has"))


@pytest.mark.parametrize("name", sorted(SWEEPS))
def test_every_sweep_expands_with_a_preset_into_shapes_the_config_takes(name, cuda_usable):
    config = yaml.safe_load(CONFIG.read_text())
    config["device"] = "cpu"
    config["cpu"]["shapes"] = [{"name": "llama", "preset": "llama-3.1-8b", "sweep": name}]
    run_config.validate(config, str(SCHEMAS / "config.schema.yaml"))
    shapes = run_config.resolve(config)["shapes"]
    assert len(shapes) == len(_combinations(presets.sweep(name)))
    for shape in shapes:
        resolved = Shape.from_config(shape)
        assert (resolved.heads, resolved.kv_heads, resolved.dim) == (32, 8, 128)
        if "cache_lens" in shape:  # decode: every request's cache holds at least its new queries
            assert resolved.causal and min(resolved.seq_lens_kv) >= (shape.get("seq") or 1)
            assert len(resolved.seq_lens_kv) == shape["batch"]


def test_sweep_returns_a_copy_of_the_axes_only():
    axes = presets.sweep("decode-serving")
    assert "source" not in axes and "notes" not in axes
    axes["batch"].append(7)
    axes["cache_lens"][0]["mean"] = 1
    again = presets.sweep("decode-serving")
    assert 7 not in again["batch"] and again["cache_lens"][0]["mean"] != 1
    presets.load_sweeps()["prefill"]["seq"].clear()
    assert presets.sweep("prefill")["seq"]


@pytest.mark.parametrize(
    ("name", "suggested"),
    [
        ("decode-serve", "decode-serving"),
        ("Prefill", "prefill"),
        ("speculative", "speculative-decode"),
        ("decode-long", "decode-long-context"),
    ],
)
def test_an_unknown_sweep_suggests_the_close_names(name, suggested):
    with pytest.raises(ValueError, match="unknown sweep") as error:
        presets.sweep(name)
    message = str(error.value)
    assert f"did you mean {suggested!r}" in message or f"or {suggested!r}" in message
    assert ", ".join(presets.sweep_names()) in message


@pytest.mark.parametrize("name", ["nothing-like-it", 7, None, "llama-3.1-8b"])
def test_an_unknown_sweep_without_close_names_lists_them_all(name):
    with pytest.raises(ValueError, match="unknown sweep") as error:
        presets.sweep(name)
    assert "did you mean" not in str(error.value)
    assert ", ".join(presets.sweep_names()) in str(error.value)


GOOD_SWEEP = {
    "batch": [1, 16],
    "cache_lens": [{"min": 64, "max": 512, "mean": 128}],
    "source": "https://example.org",
}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"heads": [8, 16]}, r"unknown keys \['heads'\]"),
        ({"batch": 16}, "batch must be a non-empty list"),
        ({"batch": []}, "batch must be a non-empty list"),
        ({"batch": [0]}, "batch values must be positive integers"),
        ({"batch": [True]}, "batch values must be positive integers"),
        ({"batch": [1, 1]}, "lists 1 twice"),
        ({"page_size": [16.0]}, "page_size values must be positive integers"),
        ({"causal": ["yes"]}, "causal values must be true or false"),
        ({"kv_dtype": ["fp8"]}, "kv_dtype values must be one of float8_e4m3fn, float8_e5m2"),
        ({"kv_dtype": [None]}, "kv_dtype values must be one of"),
        ({"cache_lens": [{"min": 64, "max": 512}]}, "give min, max, mean and optionally seed"),
        ({"cache_lens": [{"min": 64, "max": 512, "mean": 128, "total": 3}]}, "give min, max, mean"),
        ({"cache_lens": [{"min": 64, "max": 512, "mean": 1024}]}, "mean is not between min and max"),
        ({"cache_lens": [{"min": 600, "max": 512, "mean": 550}]}, "min is above max"),
        ({"cache_lens": [{"min": 0, "max": 512, "mean": 128}]}, "min must be a positive integer"),
        ({"cache_lens": [{"min": 64, "max": 512, "mean": "128"}]}, "mean must be a number"),
        ({"cache_lens": [{"min": 64, "max": 512, "mean": 128, "seed": -1}]}, "seed must be an integer >= 0"),
        ({"cache_lens": [128]}, "values are lists of lengths or"),
        ({"cache_lens": [[64, 0]]}, "a list of lengths holds positive integers"),
        ({"cache_lens": [[64, 80]]}, "cache_lens lists 2 requests, and batch takes 1"),
        ({"seq": [128]}, "a cache of 64 keys is shorter than the 128 new queries"),
        ({"seq_lens": [{"min": 1, "max": 64, "total": 256}]}, "cannot go with batch, cache_lens"),
        ({"source": "  "}, "source"),
        ({"notes": 3}, "notes"),
    ],
)
def test_check_sweep_refuses_what_no_shape_could_measure(change, message):
    with pytest.raises(presets.PresetError, match=message):
        presets.check_sweep("bad", {**GOOD_SWEEP, **change})


def test_check_sweep_requires_axes_a_source_and_a_shape_like_name():
    with pytest.raises(presets.PresetError, match="missing source"):
        presets.check_sweep("bad", {"batch": [1]})
    with pytest.raises(presets.PresetError, match="no axes"):
        presets.check_sweep("bad", {"source": "https://example.org"})
    with pytest.raises(presets.PresetError, match="a sweep is a mapping"):
        presets.check_sweep("bad", [1, 2])
    for name in ("has space", "a..b", "", 3):
        with pytest.raises(presets.PresetError, match="sweep names are letters"):
            presets.check_sweep(name, GOOD_SWEEP)


def test_check_sweep_takes_lists_of_lengths_and_packed_batches():
    listed = {
        "batch": [3],
        "seq": [2],
        "cache_lens": [[4, 8, 16], [2, 2, 2]],
        "source": "https://example.org",
    }
    assert presets.check_sweep("ok", listed)["cache_lens"] == [[4, 8, 16], [2, 2, 2]]
    packed = {
        "seq_lens": [[128, 256], {"min": 1, "max": 64, "total": 256, "seed": 3}],
        "causal": [True, False],
        "source": "https://example.org",
    }
    assert presets.check_sweep("packed", packed)["seq_lens"][1]["seed"] == 3
    fp8 = {
        "kv_dtype": ["float8_e4m3fn", "float8_e5m2"],
        "page_size": [16, 32],
        "source": "https://example.org",
    }
    assert presets.check_sweep("fp8", fp8)["page_size"] == [16, 32]


def test_parse_sweeps_reads_the_sweeps_section():
    assert presets.parse_sweeps({"models": {"ok": GOOD}}) == {}
    assert presets.parse_sweeps({"models": {"ok": GOOD}, "sweeps": None}) == {}
    assert presets.parse_sweeps({"models": {"ok": GOOD}, "sweeps": {"s": GOOD_SWEEP}}) == {"s": GOOD_SWEEP}
    with pytest.raises(presets.PresetError, match="sweeps: must map sweep names"):
        presets.parse_sweeps({"models": {"ok": GOOD}, "sweeps": [GOOD_SWEEP]})
    with pytest.raises(presets.PresetError, match="unknown sections"):
        presets.parse_sweeps({"models": {"ok": GOOD}, "sweep": {}})
