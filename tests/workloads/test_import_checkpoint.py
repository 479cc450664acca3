"""archsim import --masks: per-layer sparsity from a real torch state_dict."""

from __future__ import annotations

import importlib
import io
from pathlib import Path

import pytest

from archsim.cli import main
from workloads.layers import expand
from workloads.load import load_workload

torch = pytest.importorskip("torch")
nn = torch.nn


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)    # C_in = 3: no N:M fits
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)   # pruned 2:4 along C_in
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)   # 2:4 along C_in and C_out
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1 = nn.Linear(32, 64)                   # unstructured, density ~0.3
        self.fc2 = nn.Linear(64, 16)                   # dense

    def forward(self, x):
        x = torch.relu(self.conv3(torch.relu(self.conv2(torch.relu(self.conv1(x))))))
        return self.fc2(torch.relu(self.fc1(self.pool(x).flatten(1))))


def net() -> nn.Module:
    return _Net()


def _src() -> str:
    importlib.import_module(__name__)
    return f"{__name__}:net"


def _checkpoint(path: Path) -> dict:
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(v.shape, generator=gen) for k, v in _Net().state_dict().items()}
    w = state["conv2.weight"].permute(0, 2, 3, 1)              # groups of 4 along C_in
    g = w.reshape(-1, 4)
    keep = torch.zeros_like(g).scatter_(1, g.abs().topk(2, dim=1).indices, 1)
    state["conv2.weight"] = (g * keep).reshape(w.shape).permute(0, 3, 1, 2).contiguous()
    o = torch.arange(32).view(32, 1, 1, 1)
    i = torch.arange(32).view(1, 32, 1, 1)
    state["conv3.weight"] = state["conv3.weight"] * (((i - o) % 4) < 2)
    state["fc1.weight"] = state["fc1.weight"] * (torch.rand(64, 32, generator=gen) < 0.3)
    torch.save(state, path)
    return state


def test_masks_from_a_checkpoint_set_each_layers_sparsity(tmp_path, capsys):
    ckpt, out = tmp_path / "net.pt", tmp_path / "w.yaml"
    state = _checkpoint(ckpt)
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(out), "--hardware",
                 "tiny", "--mode", "training", "--sparsity", "bdwp:2:8", "--masks", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    layers = {layer.name: layer.sparsity for layer in expand(load_workload(out))}
    assert layers["conv1"].kind == "dense"
    assert (layers["conv2"].kind, layers["conv2"].n, layers["conv2"].m, layers["conv2"].dim) == (
        "nm", 2, 4, "in")
    assert (layers["conv3"].kind, layers["conv3"].n, layers["conv3"].m) == ("bdwp", 2, 4)
    assert (layers["fc1"].kind, layers["fc1"].n, layers["fc1"].m) == ("nm", 2, 4)
    assert (layers["fc2"].kind, layers["fc2"].n, layers["fc2"].m) == ("bdwp", 2, 8)
    density = float((state["fc1.weight"] != 0).float().mean())
    text = out.read_text()
    assert f"unstructured, density {density:.2f}: nearest supported N:M is 2:4" in text
    assert "checkpoint is 2:4 along in and out" in text
    # the dense layer's masks are the top-2 of 8 of its real weights: their share of |W|
    w = state["fc2.weight"].abs()
    ff = float(w.reshape(16, 8, 8).topk(2, dim=-1).values.sum() / w.sum())
    assert f"FF mask keeps {ff:.0%} of |W|" in text
    assert "fc1" in printed and f"{density:.3f}" in printed and "unstructured" in printed


def test_bad_checkpoints_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    argv = ["import", _src(), "--input-shape", "1,3,8,8", "--out", str(tmp_path / "w.yaml"),
            "--masks", str(bad)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a torch state_dict" in err
    other = tmp_path / "other.pt"
    torch.save({"encoder.weight": torch.zeros(2, 2)}, other)
    assert main(argv[:-1] + [str(other)]) == 2
    assert "none of the model's layers is in the checkpoint" in capsys.readouterr().err


def test_the_bdwp_digits_model_of_the_baselines(tmp_path, capsys):
    """baselines/bdwp's DigitsCNN (BDWP layers compute their masks in forward) imports with
    nothing unsupported, and its state_dict's dense master weights give the masks."""
    pytest.importorskip("baselines.bdwp.train_digits")
    ckpt, out = tmp_path / "digits.pt", tmp_path / "w.yaml"
    torch.manual_seed(0)
    torch.save(digits().state_dict(), ckpt)
    src = f"{__name__}:digits"
    assert main(["import", src, "--input-shape", "32,1,8,8", "--out", str(out), "--strict",
                 "--hardware", "tiny", "--mode", "training", "--sparsity", "bdwp:2:8",
                 "--masks", str(ckpt)]) == 0
    printed = capsys.readouterr().out
    assert "unsupported" not in printed
    layers = {layer.name: layer.sparsity.kind for layer in expand(load_workload(out))}
    assert layers == {"conv1": "dense", "conv2": "bdwp", "fc1": "bdwp", "fc2": "dense"}
    text = out.read_text()
    assert text.count("masks from the checkpoint: FF mask keeps") == 2


def digits() -> nn.Module:
    from baselines.bdwp.train_digits import DigitsCNN, TrainConfig

    return DigitsCNN(TrainConfig(name="bdwp 2:8", mode="bdwp", n=2, m=8))


@pytest.mark.parametrize("key, value, message", [
    ("conv2.weight", torch.zeros(3, 3), "conv2.weight has shape [3, 3]; the model's conv2d "
                                        "conv2 needs [32, 16, 3, 3]"),
    ("fc1.weight_mask", torch.ones(10, 16), "fc1.weight_mask has shape [10, 16]; the model's "
                                            "linear fc1 needs [64, 32]"),
    ("fc2.weight", torch.full((16, 64), float("nan")), "fc2.weight holds NaN or infinite"),
    ("fc2.weight", "text", "fc2.weight is a str; expected a tensor"),
])
def test_a_checkpoint_entry_of_the_wrong_kind_is_one_line(tmp_path, capsys, key, value, message):
    ckpt = tmp_path / "net.pt"
    state = _checkpoint(ckpt)
    state[key] = value
    torch.save(state, ckpt)
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(tmp_path / "w.yaml"),
                 "--masks", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "w.yaml").exists()


def test_a_sparse_tensor_reads_as_its_dense_values(tmp_path, capsys):
    ckpt, out = tmp_path / "net.pt", tmp_path / "w.yaml"
    state = _checkpoint(ckpt)
    state["conv2.weight"] = state["conv2.weight"].to_sparse()
    torch.save(state, ckpt)
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(out), "--hardware",
                 "tiny", "--masks", str(ckpt)]) == 0
    assert "2:4 along in" in capsys.readouterr().out


def test_masks_naming_a_folder_is_one_line(tmp_path, capsys):
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(tmp_path / "w.yaml"),
                 "--masks", str(tmp_path)]) == 2
    assert f"--masks {tmp_path}: is a folder" in capsys.readouterr().err


def test_a_2_4_checkpoint_is_labelled_2_4_where_4_8_also_fits(tmp_path, capsys):
    """sat_vcu1525 runs both 2:4 and 4:8; a 2:4 mask fits both, and it is 2:4 (it said 4:8)."""
    ckpt, out = tmp_path / "net.pt", tmp_path / "w.yaml"
    _checkpoint(ckpt)
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(out),
                 "--masks", str(ckpt)]) == 0
    conv2 = next(layer for layer in expand(load_workload(out)) if layer.name == "conv2")
    assert (conv2.sparsity.n, conv2.sparsity.m) == (2, 4)
    assert "checkpoint is 2:4 along in" in out.read_text()


class _Shared(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 16)

    def forward(self, x):
        return self.fc(torch.relu(self.fc(x)))  # one layer, called twice


def shared() -> nn.Module:
    return _Shared()


def test_a_layer_called_twice_keeps_its_checkpoint_sparsity_at_each_call(tmp_path):
    """The second call is op fc.1; its weights are fc's (it lost the checkpoint's 2:4)."""
    ckpt, out = tmp_path / "shared.pt", tmp_path / "w.yaml"
    w = torch.randn(16, 16, generator=torch.Generator().manual_seed(1))
    keep = torch.zeros_like(w).view(-1, 4).scatter_(1, w.view(-1, 4).abs().topk(2, 1).indices, 1)
    torch.save({"fc.weight": w * keep.view(16, 16), "fc.bias": torch.zeros(16)}, ckpt)
    importlib.import_module(__name__)
    assert main(["import", f"{__name__}:shared", "--input-shape", "4,16", "--out", str(out),
                 "--hardware", "tiny", "--masks", str(ckpt)]) == 0
    layers = {layer.name: layer.sparsity for layer in expand(load_workload(out))}
    assert set(layers) == {"fc", "fc.1"}
    assert all((s.kind, s.n, s.m) == ("nm", 2, 4) for s in layers.values())


def _masks_error(tmp_path, capsys, ckpt: Path) -> str:
    out = tmp_path / "w.yaml"
    assert main(["import", _src(), "--input-shape", "1,3,8,8", "--out", str(out), "--masks",
                 str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err and not out.exists(), err
    return err


def test_a_checkpoint_file_that_cannot_be_read_says_why(tmp_path, capsys):
    """Each said 'not a torch state_dict' with torch's own words: '(EOFError)' for an empty
    file, '(101)' for a text file, a paragraph about miniz for a truncated one."""
    whole = tmp_path / "net.pt"
    _checkpoint(whole)
    cases = {"empty.pt": b"", "notes.pt": b"epochs: 90\nlr: 0.1\n",
             "half.pt": whole.read_bytes()[: whole.stat().st_size // 2],
             "odd.pt": bytes(range(256)) * 4}
    expected = {"empty.pt": "the file is empty", "notes.pt": "is a text file, not a torch state_dict",
                "half.pt": "a torch zip archive that is truncated or damaged",
                "odd.pt": "not a torch state_dict (it is neither a torch zip archive nor a pickle"}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        err = _masks_error(tmp_path, capsys, tmp_path / name)
        assert f"--masks {tmp_path / name}: {expected[name]}" in err, err
    assert "file not found" in _masks_error(tmp_path, capsys, tmp_path / "none.pt")


def test_a_pickle_with_objects_is_refused_in_one_line_without_warnings(tmp_path, capsys):
    import pickle

    ckpt = tmp_path / "obj.pt"
    ckpt.write_bytes(pickle.dumps({"conv2.weight": Path("x")}, protocol=4))
    err = _masks_error(tmp_path, capsys, ckpt)
    assert "weights-only loader refuses" in err and "Warning" not in err


@pytest.mark.parametrize("key, value, message", [
    ("conv2.weight", torch.zeros(32, 16, 5, 5), "conv2.weight has shape [32, 16, 5, 5]; the "
                                                "model's conv2d conv2 needs [32, 16, 3, 3]"),
    ("fc1.weight", torch.zeros(64, 32, dtype=torch.complex64), "fc1.weight is torch.complex64; "
                                                               "expected real weights"),
    ("fc1.weight", torch.zeros(64, 32).to(torch.float8_e4m3fn).fill_(float("nan")),
     "fc1.weight holds NaN or infinite values (2048 of 2048)"),
    (1, torch.zeros(2), "none of the model's layers is in the checkpoint"),
])
def test_more_checkpoint_entries_of_the_wrong_kind(tmp_path, capsys, key, value, message):
    """A 5x5 kernel for a 3x3 convolution was read silently; a complex, a float8 weight and a
    key that is not a string were tracebacks."""
    ckpt = tmp_path / "net.pt"
    state = {} if isinstance(key, int) else _checkpoint(ckpt)
    state[key] = value
    torch.save(state, ckpt)
    assert message in _masks_error(tmp_path, capsys, ckpt)


class _Conv1d(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv1d(8, 16, 3, padding=1)

    def forward(self, x):
        return self.conv(x)


def conv1d() -> nn.Module:
    return _Conv1d()


def test_conv1d_and_bool_weights_read_their_pattern(tmp_path, capsys):
    """A Conv1d weight [out, in, k] was refused as not [out, in, kh, kw]; a bool weight was
    a traceback in abs()."""
    ckpt, out = tmp_path / "c.pt", tmp_path / "w.yaml"
    keep = (torch.arange(8).view(1, 8, 1) % 4 < 2).expand(16, 8, 3)  # 2:4 along C_in
    importlib.import_module(__name__)
    argv = ["import", f"{__name__}:conv1d", "--input-shape", "1,8,32", "--out", str(out),
            "--hardware", "tiny", "--sparsity", "nm:2:4", "--masks", str(ckpt), "--force"]
    for weight in (torch.randn(16, 8, 3) * keep, keep.clone()):
        torch.save({"conv.weight": weight}, ckpt)
        assert main(argv) == 0, capsys.readouterr().err
        assert "checkpoint is 2:4 along in" in out.read_text()


def _nm_in(shape: tuple[int, int], n: int, m: int, dim: int = 1, seed: int = 0):
    """Random weights of ``shape``, ``n:m`` along dimension ``dim`` (a fixed pattern: the
    first ``n`` of every ``m``, so no sparser pattern fits too)."""
    keep = (torch.arange(shape[dim]) % m < n).view([-1 if d == dim else 1 for d in range(2)])
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * keep


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.self_attn = nn.MultiheadAttention(64, 4, batch_first=True)  # in_proj_weight [192, 64]
        self.cross = nn.MultiheadAttention(64, 4, batch_first=True)      # q, k, v rows of it
        self.kv = nn.MultiheadAttention(64, 4, kdim=32, vdim=48, batch_first=True)  # q/k/v_proj_weight

    def forward(self, x):
        x = self.self_attn(x, x, x, need_weights=False)[0]
        memory = torch.cat([x, x], 1)  # longer than x
        x = self.cross(x, memory, memory, need_weights=False)[0]
        return self.kv(x, x[..., :32], x[..., :48], need_weights=False)[0]


def attention() -> nn.Module:
    return _Attention()


def test_multihead_attention_weights_are_read_from_its_own_parameters(tmp_path, capsys):
    """nn.MultiheadAttention keeps its in-projection in in_proj_weight (q, k and v stacked) or,
    with kdim/vdim, in q/k/v_proj_weight: none was found ('no self_attn.in_proj.weight in the
    checkpoint'), and k_proj/v_proj took embed_dim for their in_features, not kdim/vdim."""
    ckpt, out = tmp_path / "attn.pt", tmp_path / "w.yaml"
    state = dict(_Attention().state_dict())
    state["self_attn.in_proj_weight"] = _nm_in((192, 64), 2, 4)
    state["self_attn.out_proj.weight"] = _nm_in((64, 64), 1, 4)
    state["cross.in_proj_weight"] = torch.cat([_nm_in((64, 64), 1, 4), torch.randn(64, 64),
                                               _nm_in((64, 64), 2, 4)])
    state["cross.out_proj.weight"] = torch.randn(64, 64)
    state["kv.q_proj_weight"] = _nm_in((64, 64), 2, 4)
    state["kv.k_proj_weight"] = _nm_in((64, 32), 1, 4)
    state["kv.v_proj_weight"] = torch.randn(64, 48)
    state["kv.out_proj.weight"] = _nm_in((64, 64), 2, 4)
    torch.save(state, ckpt)
    importlib.import_module(__name__)
    assert main(["import", f"{__name__}:attention", "--input-shape", "2,8,64", "--out", str(out),
                 "--hardware", "tiny", "--masks", str(ckpt)]) == 0, capsys.readouterr().err
    assert "not in checkpoint" not in capsys.readouterr().out
    layers = {layer.name: layer for layer in expand(load_workload(out))}
    got = {name: (s.n, s.m) if s.kind == "nm" else s.kind
           for name, s in ((n, layer.sparsity) for n, layer in layers.items())
           if layers[name].kind == "linear"}
    assert got == {"self_attn.in_proj": (2, 4), "self_attn.out_proj": (1, 4),
                   "cross.q_proj": (1, 4), "cross.k_proj": "dense", "cross.v_proj": (2, 4),
                   "cross.out_proj": "dense", "kv.q_proj": (2, 4), "kv.k_proj": (1, 4),
                   "kv.v_proj": "dense", "kv.out_proj": (2, 4)}
    assert (layers["kv.k_proj"].in_features, layers["kv.v_proj"].in_features) == (32, 48)
    state["cross.in_proj_weight"] = torch.randn(64, 64)  # one projection's, not all three
    torch.save(state, ckpt)
    assert main(["import", f"{__name__}:attention", "--input-shape", "2,8,64", "--out", str(out),
                 "--hardware", "tiny", "--masks", str(ckpt), "--force"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert ("checkpoint entry cross.in_proj_weight has shape [64, 64]; the model's linear "
            "cross.q_proj needs [192, 64] (3 projections stacked)") in err


class _Proj(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.U = nn.Parameter(torch.empty(32, 16))  # torch.matmul(x, U): [in, out]

    def forward(self, x):
        return torch.matmul(x, self.U)


class _Params(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(64, 32))  # x @ W: [in, out]
        self.proj = _Proj()
        self.V = nn.Parameter(torch.empty(8, 16))   # F.linear(x, V): [out, in], as nn.Linear

    def forward(self, x):
        return nn.functional.linear(self.proj(x @ self.W), self.V)


def params() -> nn.Module:
    return _Params()


def _params_argv(ckpt: Path, out: Path) -> list[str]:
    importlib.import_module(__name__)
    return ["import", f"{__name__}:params", "--input-shape", "4,64", "--out", str(out),
            "--hardware", "tiny", "--masks", str(ckpt)]


def test_a_bare_parameter_is_read_by_its_name_and_layout(tmp_path, capsys):
    """x @ W, torch.matmul(x, U) and F.linear(x, V) are linear ops named after the call
    (matmul, proj, linear), and their checkpoint entries are the parameters' own names (W,
    proj.U, V; none was found). W and U are [in, out]: N:M along in is along their rows. W
    is pruned with torch.nn.utils.prune, so its mask is W_mask."""
    from torch.nn.utils import prune

    ckpt, out = tmp_path / "p.pt", tmp_path / "w.yaml"
    model = _Params()
    with torch.no_grad():
        model.W.copy_(torch.randn(64, 32))
        model.proj.U.copy_(_nm_in((32, 16), 1, 4, dim=0))
        model.V.copy_(_nm_in((8, 16), 2, 4))
    prune.custom_from_mask(model, "W", _nm_in((64, 32), 2, 4, dim=0) != 0)
    torch.save(model.state_dict(), ckpt)
    assert main(_params_argv(ckpt, out)) == 0, capsys.readouterr().err
    layers = {layer.name: layer for layer in expand(load_workload(out))}
    assert {name: (layer.sparsity.n, layer.sparsity.m) for name, layer in layers.items()} == {
        "matmul": (2, 4), "proj": (1, 4), "linear": (2, 4)}
    assert [(layers[n].in_features, layers[n].out_features) for n in ("matmul", "proj", "linear")
            ] == [(64, 32), (32, 16), (16, 8)]
    assert out.read_text().count("checkpoint is") == 3


def test_a_bare_parameter_in_linears_layout_is_one_line(tmp_path, capsys):
    """W saved transposed (as nn.Linear's [out, in]) is refused with the layout x @ W needs."""
    ckpt = tmp_path / "p.pt"
    torch.save({"W": torch.randn(32, 64), "proj.U": torch.randn(32, 16)}, ckpt)
    assert main(_params_argv(ckpt, tmp_path / "w.yaml")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "checkpoint entry W has shape [32, 64]; the model's linear matmul needs [64, 32]" in err


class _Transposed(nn.Module):
    """A parameter used through its transpose, or on the left of matmul."""

    def __init__(self) -> None:
        super().__init__()
        self.W = nn.Parameter(torch.empty(32, 64))  # x @ W.T: [out, in], as nn.Linear
        self.fc = nn.Linear(32, 16)                 # x @ fc.weight.t()
        self.U = nn.Parameter(torch.empty(8, 16))   # torch.matmul(x, U.transpose(0, 1))
        self.P = nn.Parameter(torch.empty(24, 8))   # P @ x: [out, in]
        self.Q = nn.Parameter(torch.empty(24, 12))  # Q.T @ x: [in, out]

    def forward(self, x):
        h = torch.matmul(x @ self.W.T @ self.fc.weight.t(), self.U.transpose(0, 1))
        return self.Q.T @ (self.P @ h.T)


def transposed() -> nn.Module:
    return _Transposed()


def _transposed_argv(out: Path, *extra: str) -> list[str]:
    importlib.import_module(__name__)
    return ["import", f"{__name__}:transposed", "--input-shape", "4,64", "--out", str(out),
            "--hardware", "tiny", *extra]


def test_a_transposed_or_left_parameter_is_a_weighted_linear(tmp_path, capsys):
    """x @ W.T, x @ fc.weight.t(), torch.matmul(x, U.transpose(0, 1)), P @ x and Q.T @ x were
    weight-free gemm ops (never pruned by --sparsity): they are linear layers over the rows
    of x (its columns for a parameter on the left), with in the reduction dimension."""
    out = tmp_path / "w.yaml"
    assert main(_transposed_argv(out, "--sparsity", "nm:2:4")) == 0, capsys.readouterr().err
    layers = expand(load_workload(out))
    assert [(layer.kind, layer.in_features, layer.out_features, layer.rows) for layer in layers] == [("linear", 64, 32, 4), ("linear", 32, 16, 4),
                                     ("linear", 16, 8, 4), ("linear", 8, 24, 4),
                                     ("linear", 24, 12, 4)]
    assert {(layer.sparsity.kind, layer.sparsity.n, layer.sparsity.m) for layer in layers} == {
        ("nm", 2, 4)}


def test_a_transposed_or_left_parameter_reads_its_own_checkpoint_entry(tmp_path, capsys):
    """Each reads its parameter's own key (W, fc.weight, U, P, Q; none was looked up), with
    N:M groups along the dimension it reduces: the columns of W, fc.weight, U and P (used
    [out, in]) and the rows of Q (Q.T @ x reduces over Q's first dimension)."""
    ckpt, out = tmp_path / "t.pt", tmp_path / "w.yaml"
    state = {"W": _nm_in((32, 64), 2, 4), "fc.weight": _nm_in((16, 32), 1, 4),
             "fc.bias": torch.zeros(16), "U": _nm_in((8, 16), 1, 2),
             "P": _nm_in((24, 8), 1, 4), "Q": _nm_in((24, 12), 1, 2, dim=0)}
    torch.save(state, ckpt)
    assert main(_transposed_argv(out, "--masks", str(ckpt))) == 0, capsys.readouterr().err
    assert "not in checkpoint" not in capsys.readouterr().out
    got = [(s.n, s.m) for s in (layer.sparsity for layer in expand(load_workload(out)))]
    assert got == [(2, 4), (1, 4), (1, 2), (1, 4), (1, 2)]
    assert out.read_text().count("checkpoint is") == 5  # structured, not 'unstructured'
    state["Q"] = state["Q"].t().contiguous()  # [out, in]: not the layout Q.T @ x uses
    torch.save(state, ckpt)
    assert main(_transposed_argv(out, "--masks", str(ckpt), "--force")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    assert "checkpoint entry Q has shape [12, 24]; the model's linear matmul.4 needs [24, 12]" in err


def _export_transposed(path: Path, fold: bool) -> Path:
    buf = io.BytesIO()
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter needs no onnxscript
        torch.onnx.export(_Transposed().eval(), (torch.randn(4, 64),), buf, dynamo=False,
                          do_constant_folding=fold)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "transpose-nodes"])
def test_an_onnx_export_of_transposed_and_left_parameters_imports_as_torch_does(tmp_path, fold,
                                                                                 capsys):
    """The same model exported to ONNX, its transposes folded into new constants or kept as
    Transpose nodes, imports as the same five linear layers (they were weight-free gemm ops
    but for x @ W.T folded); kept as Transpose nodes, each reads its parameter's own
    checkpoint entry in the orientation the torch import reads it (the same N:M patterns)."""
    pytest.importorskip("onnx")
    onnx_file = _export_transposed(tmp_path / "t.onnx", fold)
    out, ckpt = tmp_path / "w.yaml", tmp_path / "t.pt"
    argv = ["import", str(onnx_file), "--out", str(out), "--hardware", "tiny"]
    assert main([*argv, "--sparsity", "nm:2:4"]) == 0, capsys.readouterr().err
    layers = expand(load_workload(out))
    assert [(layer.kind, layer.in_features, layer.out_features, layer.rows, layer.sparsity.kind)
            for layer in layers] == [("linear", 64, 32, 4, "nm"), ("linear", 32, 16, 4, "nm"),
                                     ("linear", 16, 8, 4, "nm"), ("linear", 8, 24, 4, "nm"),
                                     ("linear", 24, 12, 4, "nm")]
    if fold:
        return  # folded constants are no parameters: no checkpoint entry names them
    torch.save({"W": _nm_in((32, 64), 2, 4), "fc.weight": _nm_in((16, 32), 1, 4),
                "U": _nm_in((8, 16), 1, 2), "P": _nm_in((24, 8), 1, 4),
                "Q": _nm_in((24, 12), 1, 2, dim=0)}, ckpt)
    assert main([*argv, "--masks", str(ckpt), "--force"]) == 0, capsys.readouterr().err
    got = [(s.n, s.m) for s in (layer.sparsity for layer in expand(load_workload(out)))]
    assert got == [(2, 4), (1, 4), (1, 2), (1, 4), (1, 2)]
    assert out.read_text().count("checkpoint is") == 5
