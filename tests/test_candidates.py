"""Candidates: user kernels found before any job, and unsupported reasons that say why in one line."""

import hashlib
import shutil
import sys

import pytest
from helpers import ROOT

from attnbench import Unsupported, candidates, usercode
from attnbench.usercode import CandidateName


@pytest.fixture
def kernel_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "mykernels.py").write_text(
        "from torch.nn.functional import scaled_dot_product_attention as sdpa\n"
        "import math\n"
        "def attention(q, k, v, *, causal, scale):\n    return sdpa(q, k, v)\n"
        "alias = attention\n"
        "try:\n    def guarded(q, k, v, *, causal, scale):\n        return q\nexcept ImportError:\n    pass\n"
    )
    (tmp_path / "broken.py").write_text("def attention(q, k, v:\n")
    (tmp_path / "starred.py").write_text("from mykernels import *\n")
    return tmp_path


@pytest.mark.parametrize("name", ["mykernels:attention", "mykernels:alias", "mykernels:sdpa", "mykernels:guarded",
                                  "starred:attention"])
def test_a_kernel_that_exists_is_found(kernel_dir, name):
    assert candidates.user_kernel_problem(name) is None


def test_a_missing_module_is_named_with_where_it_was_looked_for(kernel_dir):
    problem = candidates.user_kernel_problem("mykernel:attention")
    assert "module 'mykernel' not found" in problem and str(kernel_dir) in problem


def test_a_missing_function_is_named_with_a_suggestion(kernel_dir):
    problem = candidates.user_kernel_problem("mykernels:atention")
    assert "defines no 'atention'" in problem and "did you mean mykernels:attention?" in problem


def test_a_module_that_does_not_parse_says_where(kernel_dir):
    assert "does not parse: line 1" in candidates.user_kernel_problem("broken:attention")


def test_a_missing_package_is_a_missing_module(kernel_dir):
    assert "not found" in candidates.user_kernel_problem("nopackage.sub:fn")


def test_a_registered_callable_is_a_known_candidate():
    candidates.register("mine", lambda q, k, v, *, causal, scale: q)
    try:
        assert CandidateName.parse("mine").is_user and candidates.user_kernel_problem("mine") is None
    finally:
        candidates.unregister("mine")
    assert not CandidateName.parse("mine").is_user
    with pytest.raises(ValueError, match="built-in"):
        candidates.register("flash", print)


# What PyTorch's SDPA warns when a forced backend declines (shape of torch 2.11's messages on CUDA).
SDPA_WARNINGS = [
    "Memory efficient kernel not used because:",
    "Memory Efficient attention requires attn_mask to be None or of the same dtype as query",
    "Flash attention kernel not used because:",
    "Flash attention only supports head dimension at most 256",
    "Flash attention does not support attn_mask",
    "cuDNN attention kernel not used because:",
    "cuDNN attention requires head dimension at most 128",
    "Torch was not compiled with flash attention.",
]
NO_KERNEL = RuntimeError("No available kernel. Aborting execution.")


def test_an_sdpa_decline_is_the_forced_backends_own_warning():
    reason, detail = candidates.unsupported_reason("flash", "cuda", NO_KERNEL, SDPA_WARNINGS)
    assert reason == "Flash attention only supports head dimension at most 256; Flash attention does not support attn_mask"
    assert "Memory Efficient" in detail and "No available kernel" in detail
    reason, _ = candidates.unsupported_reason("cudnn", "cuda", NO_KERNEL, SDPA_WARNINGS)
    assert reason.startswith("cuDNN attention requires head dimension at most 128")


def test_on_the_cpu_a_cuda_only_backend_needs_cuda():
    exc = RuntimeError("No viable backend for scaled_dot_product_attention was found. This is likely due to")
    reason, detail = candidates.unsupported_reason("efficient", "cpu", exc, [])
    assert reason.startswith("needs CUDA") and "No viable backend" in detail


def test_a_user_kernel_declines_only_explicitly():
    says = ValueError("dim 72 is not supported")
    assert candidates.unsupported_reason("mod:fn", "cuda", says, []) is None
    assert candidates.unsupported_reason("mod:fn", "cuda", Unsupported("dim 72"), [])[0] == "dim 72"
    assert candidates.unsupported_reason("mod:fn", "cuda", NotImplementedError("later"), [])[0] == "later"
    # The built-in libraries' own wording still counts (FlexAttention, Inductor).
    assert candidates.unsupported_reason("flex", "cuda", says, [])[0] == "dim 72 is not supported"


def test_a_long_reason_is_one_line_of_bounded_length():
    reason, detail = candidates.unsupported_reason("flex", "cuda", NotImplementedError("x\n" * 500), [])
    assert "\n" not in reason and len(reason) <= candidates.REASON_CHARS and reason.endswith("…")
    assert detail.count("x") == 500


@pytest.fixture
def wrapped(tmp_path, monkeypatch):
    """`wrap:attn` only imports the real kernel, which imports a helper from a local package."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "wrap.py").write_text("import numpy\nfrom real import attn\n")
    (tmp_path / "real.py").write_text("from kernels.tiles import BLOCK\n\ndef attn(q, k, v, *, causal, scale):\n    return q\n")
    (tmp_path / "kernels").mkdir()
    (tmp_path / "kernels" / "__init__.py").write_text("")
    (tmp_path / "kernels" / "tiles.py").write_text("from .sizes import WARPS\nBLOCK = 64\n")
    (tmp_path / "kernels" / "sizes.py").write_text("WARPS = 4\n")
    (tmp_path / "unrelated.py").write_text("X = 1\n")
    return tmp_path


def test_editing_a_module_the_kernel_imports_changes_its_hash(wrapped):
    """Found by trying it: editing the module a `wrap:attn` imported its kernel from reran nothing."""
    assert {p.name for p in usercode.local_imports(wrapped / "wrap.py", wrapped)} == {
        "real.py", "__init__.py", "tiles.py", "sizes.py"  # numpy is not local: never followed
    }
    before = usercode.user_kernel_source_hash("wrap:attn")
    (wrapped / "unrelated.py").write_text("X = 2\n")
    assert usercode.user_kernel_source_hash("wrap:attn") == before
    for edited in ("real.py", "kernels/sizes.py"):  # directly, and through a relative import
        (wrapped / edited).write_text((wrapped / edited).read_text() + "# tuned\n")
        after = usercode.user_kernel_source_hash("wrap:attn")
        assert after != before
        before = after


def test_a_kernel_hash_does_not_depend_on_where_the_checkout_is(wrapped, tmp_path_factory, monkeypatch):
    here = usercode.user_kernel_source_hash("wrap:attn")
    moved = tmp_path_factory.mktemp("elsewhere") / "checkout"
    shutil.copytree(wrapped, moved)
    monkeypatch.chdir(moved)
    monkeypatch.syspath_prepend(str(moved))
    for module in ("wrap", "real"):
        sys.modules.pop(module, None)
    assert usercode.user_kernel_source_hash("wrap:attn") == here


def test_a_module_importing_nothing_local_hashes_as_it_always_did():
    """Existing runs keep their parameters: no benchmark reruns because this hash learnt imports."""
    source = ROOT / "examples" / "kernels.py"
    assert usercode.local_imports(source, ROOT) == set()
    assert usercode.user_kernel_source_hash("examples.kernels:naive_attention") == hashlib.sha256(
        source.read_bytes()
    ).hexdigest()[:16]


@pytest.mark.parametrize(
    ("name", "refused"),
    [
        ("os:system", "os"),
        ("builtins:eval", "builtins"),
        ("subprocess:run", "subprocess"),
        ("os.path:join", "os.path"),
        ("importlib:import_module", "importlib"),
    ],
)
def test_standard_library_and_builtin_modules_are_refused_as_such(name, refused):
    """Issue 31: `os:system` and `builtins:eval` were reported "not found" (they exist), and
    `subprocess:run` was accepted and called with the inputs."""
    problem = candidates.user_kernel_problem(name)
    assert problem is not None and problem.startswith(f"refused: {refused} is not a kernel module ("), problem
    assert "standard library" in problem


def test_a_job_never_imports_a_refused_module():
    """A spec not made from a checked config (a hand-written replay) is refused too, before import."""
    with pytest.raises(ValueError, match="refused: subprocess is not a kernel module"):
        candidates.declaration("subprocess:run")


@pytest.mark.parametrize(
    ("source", "name", "why"),
    [
        ("def attn(q, k, v):\n    return q\n", "mine:attn", "it has no parameter 'causal'"),
        ("def attn(q, k):\n    return q\n", "mine:attn", "it takes 2 positional arguments, attnbench passes 3"),
        (
            "def attn(q, k, v, *, causal, scale, window):\n    return q\n",
            "mine:attn",
            "it requires 'window', which attnbench does not pass",
        ),
        ("def attn(q, k, v, causal, scale, /):\n    return q\n", "mine:attn", "'causal' is positional-only there"),
        ("attn = lambda q, k, v: q\n", "mine:attn", "lambda q, k, v cannot be called"),
        ("async def attn(q, k, v, *, causal, scale):\n    return q\n", "mine:attn", "is async def"),
        ("import torch\n\n@torch.compile\ndef attn(q, k, v):\n    return q\n", "mine:attn", "no parameter 'causal'"),
        (  # a factory is prepare(workload, q, k, v)
            "from attnbench import kernel\n\n@kernel(factory=True)\ndef attn(q, k, v):\n    return None\n",
            "mine:attn",
            "attn(workload, q, k, v)",
        ),
        (  # each configuration of a grid is passed as keyword arguments
            "import attnbench\n\n@attnbench.kernel(grid={'BLOCK': [64, 128]})\n"
            "def attn(q, k, v, *, causal, scale):\n    return q\n",
            "mine:attn",
            "it has no parameter 'BLOCK'",
        ),
        ("def attn(q, k, v, *, causal, scale):\n    return q\n", "mine:attn[TILE=4]", "no parameter 'TILE'"),
    ],
)
def test_a_kernel_whose_signature_cannot_take_the_call_is_refused_at_parse(tmp_path, monkeypatch, source, name, why):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(source)
    problem = candidates.user_kernel_problem(name)
    assert problem is not None and problem.startswith("refused: ") and why in problem, problem
    assert "cannot be called as attnbench calls it" in problem or "async" in problem


@pytest.mark.parametrize(
    "source",
    [
        "def attn(q, k, v, causal, scale):\n    return q\n",
        "def attn(q, k, v, causal=False, scale=None, extra=1):\n    return q\n",
        "def attn(q, k, v, **options):\n    return q\n",
        "def attn(*args, **kwargs):\n    return args[0]\n",
        "attn = lambda q, k, v, *, causal, scale: q\n",
        # decorated by what may change its parameters: taken on trust
        "import functools\n\n@functools.lru_cache\ndef attn(x):\n    return x\n",
        # bound by something other than a def: taken on trust
        "from torch.nn.functional import scaled_dot_product_attention as attn\n",
        "def _impl(q):\n    return q\n\nattn = _impl\n",
        "from attnbench import kernel\n\n@kernel(factory=True, grid=[{'BLOCK_M': 16}, {'BLOCK_M': 32, 'stages': 2}])\n"
        "def attn(workload, q, k, v, *, BLOCK_M, stages=3):\n    return None\n",
    ],
)
def test_a_kernel_whose_signature_takes_the_call_is_accepted(tmp_path, monkeypatch, source):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine.py").write_text(source)
    assert candidates.user_kernel_problem("mine:attn") is None


def test_the_repository_kernels_take_the_call():
    for name in ("examples.kernels:naive_attention", "examples.decode_kernels:paged_decode",
                 "examples.triton_flash:attention", "examples.triton_flash:attention_bshd"):
        assert candidates.user_kernel_problem(name) is None, name


def test_a_registered_callable_whose_signature_cannot_take_the_call_is_refused():
    candidates.register("mine", lambda q, k, v: q)
    try:
        problem = candidates.user_kernel_problem("mine")
    finally:
        candidates.unregister("mine")
    assert problem is not None and problem.startswith("refused: mine(q, k, v) cannot be called"), problem
    assert "causal" in problem


@pytest.mark.parametrize(
    ("text", "parts", "user"),
    [
        ("flash", ("flash", "", "", {}), False),
        ("mod:fn", ("mod:fn", "mod", "fn", {}), True),
        ("pkg.mod:fn[BLOCK_M=64,stages=3]", ("pkg.mod:fn", "pkg.mod", "fn", {"BLOCK_M": 64, "stages": 3}), True),
    ],
)
def test_a_candidate_name_is_parsed_once_and_gives_back_its_text(text, parts, user):
    name = CandidateName.parse(text)
    assert str(name) == text and name == CandidateName.parse(text) and hash(name) == hash(CandidateName.parse(text))
    assert (name.family, name.module, name.function, name.configuration) == parts
    assert name.is_user is user and name.is_builtin is not user


def test_a_registered_name_is_a_user_kernel():
    candidates.register("mine", lambda q, k, v, *, causal, scale: q)
    try:
        assert CandidateName.parse("mine").is_user and not CandidateName.parse("mine").is_builtin
    finally:
        candidates.unregister("mine")
    assert not CandidateName.parse("mine").is_user


def test_an_invalid_candidate_name_is_refused_with_the_same_words():
    with pytest.raises(ValueError) as refused:
        CandidateName.parse("m:f[128]")
    assert str(refused.value) == "'m:f[128]': '128' is not KEY=VALUE" == candidates.user_kernel_problem("m:f[128]")
    lenient = CandidateName.parse("m:f[128]", strict=False)  # for the config's check, which says what is wrong
    assert (lenient.family, lenient.configuration, lenient.is_user) == ("m:f", {}, True)
