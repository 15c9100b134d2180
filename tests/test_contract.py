"""The kernel contract (docs/kernels.md): both forms, both layouts, configuration grids and names."""

import pytest
import yaml
from helpers import CONFIG, ROOT, SCHEMAS, bench_spec

from attnbench import candidates, config, files
from attnbench.bench import run_shape
from attnbench.usercode import CandidateName
from attnbench.workloads import Shape, Workload

SHAPE = {"name": "tiny", "batch": 2, "heads": 4, "kv_heads": 2, "seq": 48, "seq_kv": 40, "dim": 16, "causal": True}


def spec(names, **overrides):
    return bench_spec(SHAPE, names, **overrides)


@pytest.fixture
def contract_kernels(monkeypatch, locked_env):
    monkeypatch.syspath_prepend(str(ROOT / "tests"))
    monkeypatch.chdir(ROOT / "tests")  # where the workflow looks for user kernels: the working directory


def test_names_carry_a_configuration_and_read_back():
    name = candidates.configured_name("m:f", {"BLOCK_M": 128, "num_warps": 8, "fast": True, "mode": "tma"})
    assert name == "m:f[BLOCK_M=128,num_warps=8,fast=True,mode=tma]"
    parsed = CandidateName.parse(name)
    assert (parsed.family, parsed.configuration) == ("m:f", {"BLOCK_M": 128, "num_warps": 8, "fast": True, "mode": "tma"})
    assert CandidateName.parse("flash").configuration == {} and parsed.is_user
    assert candidates.configured_name("m:f", {}) == "m:f"
    with pytest.raises(ValueError, match="KEY=VALUE"):
        CandidateName.parse("m:f[128]")
    with pytest.raises(ValueError, match="identifiers"):
        candidates.configured_name("m:f", {"BLOCK M": 1})


def test_a_grid_is_every_combination_or_the_points_given():
    assert candidates.grid_points({"a": [1, 2], "b": ["x", "y"]}) == [
        {"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}
    ]
    assert candidates.grid_points([{"a": 1}, {"a": 3}]) == [{"a": 1}, {"a": 3}]
    assert candidates.grid_points(None) == []
    with pytest.raises(ValueError, match="non-empty list"):
        candidates.grid_points({"a": 4})
    grid = {f"P{i}": [1, 2] for i in range(6)}  # 64 configurations
    names = [candidates.configured_name("m:f", point) for point in candidates.grid_points(grid)]
    assert len(set(names)) == 64


def test_the_declaration_read_from_source_is_the_one_the_decorator_sets(contract_kernels):
    for function in ("factory_bhsd", "plain_bshd", "factory_bshd", "tiled", "tuned"):
        name = f"contract_kernels:{function}"
        assert candidates.static_declaration(name) == candidates.declaration(name), function
    assert candidates.static_declaration("contract_kernels:tiled").grid == ({"BLOCK": 8}, {"BLOCK": 16}, {"BLOCK": 32})
    assert candidates.static_declaration("user_kernels:correct") == candidates.Declaration()
    assert candidates.expand(["math", "contract_kernels:tiled", "contract_kernels:tiled[BLOCK=16]"]) == [
        "math", "contract_kernels:tiled[BLOCK=8]", "contract_kernels:tiled[BLOCK=16]", "contract_kernels:tiled[BLOCK=32]"
    ]


def test_both_forms_and_both_layouts_are_checked_in_their_own_layout(contract_kernels):
    names = [
        "math",
        "contract_kernels:factory_bhsd",
        "contract_kernels:plain_bshd",
        "contract_kernels:factory_bshd",
        "contract_kernels:bshd_answers_in_bhsd",
        "contract_kernels:returns_no_callable",
    ]
    result = run_shape(spec(names))
    files.validate({"schema": 2, **files.jsonable(result)}, SCHEMAS / "bench.schema.yaml", source="bench")
    entries = result["candidates"]
    assert {n: e["status"] for n, e in entries.items()} == {
        "math": "ok",
        "contract_kernels:factory_bhsd": "ok",
        "contract_kernels:plain_bshd": "ok",
        "contract_kernels:factory_bshd": "ok",
        "contract_kernels:bshd_answers_in_bhsd": "incorrect",
        "contract_kernels:returns_no_callable": "error",
    }
    assert "out has shape (2, 4, 48, 16), expected (2, 48, 4, 16)" in entries["contract_kernels:bshd_answers_in_bhsd"]["reason"]
    assert "returned Tensor, not a callable" in entries["contract_kernels:returns_no_callable"]["reason"]
    assert entries["contract_kernels:bshd_answers_in_bhsd"]["compile_ms"] > 0  # its first call's time is kept
    # The factory's setup is timed apart and never sampled: its samples are far below its 50 ms setup.
    factory = entries["contract_kernels:factory_bhsd"]
    assert factory["setup_ms"] >= 50 and max(factory["samples_ms"]) < 50
    assert "setup_ms" not in entries["contract_kernels:plain_bshd"] and "setup_ms" not in entries["math"]
    assert entries["contract_kernels:factory_bshd"]["layout"] == "bshd" and entries["math"]["layout"] == "bhsd"


def test_gradients_are_checked_in_the_candidates_layout(contract_kernels):
    result = run_shape(spec(["math", "contract_kernels:plain_bshd", "contract_kernels:factory_bshd"], mode="forward_backward"))
    assert {n: e["status"] for n, e in result["candidates"].items()} == dict.fromkeys(result["candidates"], "ok")


def test_an_answer_kept_from_earlier_inputs_is_caught_in_any_layout(contract_kernels):
    result = run_shape(spec(["math", "contract_kernels:bshd_keeps_its_first_answer"]))
    entry = result["candidates"]["contract_kernels:bshd_keeps_its_first_answer"]
    assert entry["status"] == "incorrect", entry


def test_each_configuration_is_a_candidate_called_with_its_values(contract_kernels):
    names = candidates.expand(["math", "contract_kernels:tiled", "contract_kernels:tuned"])
    result = run_shape(spec(names))
    statuses = {n: e["status"] for n, e in result["candidates"].items()}
    assert statuses == {
        "math": "ok",
        "contract_kernels:tiled[BLOCK=8]": "incorrect",
        "contract_kernels:tiled[BLOCK=16]": "ok",
        "contract_kernels:tiled[BLOCK=32]": "ok",
        "contract_kernels:tuned[BLOCK_M=16,stages=2]": "ok",
        "contract_kernels:tuned[BLOCK_M=128,stages=3]": "unsupported",
    }
    assert result["candidates"]["contract_kernels:tuned[BLOCK_M=128,stages=3]"]["reason"] == (
        "BLOCK_M=128 is longer than the sequence (48)"
    )


def test_builtin_candidates_take_the_same_workload_object():
    shape = Shape.from_config(SHAPE)
    workload = Workload.of(shape, "float32", "cpu", layout="bshd", mode="forward_backward")
    assert (workload.seq, workload.seq_kv, workload.kv_heads, workload.gqa) == (48, 40, 2, True)
    assert workload.scale == shape.scale and workload.causal_alignment == "top_left" and workload.extras == {}
    import torch

    q, k, v = (torch.randn(2, h, s, 16) for h, s in ((4, 48), (2, 40), (2, 40)))
    assert candidates.build("math", workload)(q, k, v).shape == q.shape


def _run_config(tmp_path, monkeypatch, names, reference="math"):
    monkeypatch.chdir(tmp_path)
    given = yaml.safe_load(CONFIG.read_text())
    given.update(device="cpu", candidates=names, reference=reference)
    given.pop("cpu", None)
    return config.resolve(given)


def test_a_config_naming_a_kernel_with_a_grid_runs_every_configuration(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text(
        "from attnbench import kernel\n\nSIZES = [64, 128]\n\n"
        "@kernel(factory=True, grid={'BLOCK_M': SIZES, 'num_warps': [4, 8]})\n"
        "def attn(workload, q, k, v, *, BLOCK_M, num_warps):\n    return None\n"
    )
    # A literal list bound to a name inside the dict is not itself a literal: said at parse time.
    with pytest.raises(config.ConfigError, match=r"@kernel\(grid=...\) must be a literal"):
        _run_config(tmp_path, monkeypatch, ["math", "mine:attn"])
    (tmp_path / "mine.py").write_text(
        "from attnbench import kernel\n\nGRID: dict = {'BLOCK_M': [64, 128], 'num_warps': [4, 8]}\n\n"
        "@kernel(factory=True, grid=GRID)\ndef attn(workload, q, k, v, *, BLOCK_M, num_warps):\n    return None\n"
    )
    run = _run_config(tmp_path, monkeypatch, ["math", "mine:attn"])
    assert run["candidates"] == [
        "math", "mine:attn[BLOCK_M=64,num_warps=4]", "mine:attn[BLOCK_M=64,num_warps=8]",
        "mine:attn[BLOCK_M=128,num_warps=4]", "mine:attn[BLOCK_M=128,num_warps=8]",
    ]
    assert len(set(run["kernel_hashes"].values())) == 1 and len(run["kernel_hashes"]) == 4
    one = _run_config(tmp_path, monkeypatch, ["math", "mine:attn[BLOCK_M=128,num_warps=8]"])
    assert one["candidates"] == ["math", "mine:attn[BLOCK_M=128,num_warps=8]"]
    with pytest.raises(config.ConfigError, match="reference must be one candidate"):
        _run_config(tmp_path, monkeypatch, ["math", "mine:attn"], reference="mine:attn")


def test_the_python_api_takes_a_decorated_kernel_with_its_grid(contract_kernels):
    import contract_kernels as kernels

    import attnbench

    frame = attnbench.compare({"tiled": kernels.tiled, "bshd": kernels.factory_bshd}, ["b1_h2_s32_d16"],
                              reference="math", timing={"min_rounds": 3, "max_rounds": 3, "max_time_s": 1})
    got = dict(zip(frame["candidate"], frame["status"]))
    assert got == {"tiled[BLOCK=8]": "incorrect", "tiled[BLOCK=16]": "ok", "tiled[BLOCK=32]": "ok", "bshd": "ok", "math": "ok"}
