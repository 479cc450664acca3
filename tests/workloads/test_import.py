"""archsim import: torch modules, ONNX files and SCALE-Sim topologies become workloads.

The models below mirror torchvision's definitions (torchvision itself may not import next to
the installed torch; its own tests skip then), so the MAC counts are checked against the zoo's
and the published figures, not against the importer's own arithmetic.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import sys
from pathlib import Path

import pytest

from archsim.cli import main
from workloads.errors import SpecError
from workloads.importers import import_model, parse_sparsity, workload_text
from workloads.layers import expand
from workloads.load import load_workload
from workloads.lowering import lower

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
nn = torch.nn

RESNET18_MACS = 1_814_073_344  # the zoo's, torchvision's ResNet-18 at 224², batch 1


# --------------------------------------------------------------------------------------------
# Models (torchvision's architectures, written out)
# --------------------------------------------------------------------------------------------


class _Basic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        out = self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x)))))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class _ResNet18(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for i, (width, stride) in enumerate([(64, 1), (128, 2), (256, 2), (512, 2)], start=1):
            setattr(self, f"layer{i}", nn.Sequential(_Basic(cin, width, stride), _Basic(width, width, 1)))
            cin = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, 1000)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def resnet18() -> nn.Module:
    return _ResNet18()


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act=nn.ReLU6):
    layers = [nn.Conv2d(cin, cout, k, stride, (k - 1) // 2, groups=groups, bias=False),
              nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, *([act()] if act else []))


class _InvertedResidual(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, t: int, k: int = 3) -> None:
        super().__init__()
        hidden = inp * t
        self.use_res = stride == 1 and inp == oup
        layers = [_conv_bn(inp, hidden, 1)] if t != 1 else []
        layers += [_conv_bn(hidden, hidden, k, stride, groups=hidden), _conv_bn(hidden, oup, 1, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x):
        return x + self.conv(x) if self.use_res else self.conv(x)


def mobilenet_v2() -> nn.Module:
    """torchvision's MobileNetV2 (width 1.0)."""
    settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1)]
    return _mobile_net([(_InvertedResidual, t, 3, s, c, n) for t, c, n, s in settings], nn.ReLU6)


def _mobile_net(stages, act) -> nn.Module:
    """Stem, ``stages`` of (block, expansion, kernel, stride, channels, repeats), a 1×1 head
    to 1280 channels, pooling and a 1000-way classifier: torchvision's mobile networks."""
    features, cin = [_conv_bn(3, 32, 3, 2, act=act)], 32
    for block, ratio, k, stride, c, n in stages:
        for i in range(n):
            features.append(block(cin, c, stride if i == 0 else 1, ratio, k))
            cin = c
    features.append(_conv_bn(cin, 1280, 1, act=act))
    model = nn.Sequential()
    model.features = nn.Sequential(*features)
    model.pool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.classifier = nn.Linear(1280, 1000)
    return model


class _MBConv(nn.Module):
    def __init__(self, inp: int, oup: int, stride: int, expand: int, k: int) -> None:
        super().__init__()
        hidden, squeeze = inp * expand, max(1, inp // 4)
        layers = [_conv_bn(inp, hidden, 1, act=nn.SiLU)] if expand != 1 else []
        layers.append(_conv_bn(hidden, hidden, k, stride, groups=hidden, act=nn.SiLU))
        self.block = nn.Sequential(*layers)
        self.fc1, self.fc2 = nn.Conv2d(hidden, squeeze, 1), nn.Conv2d(squeeze, hidden, 1)
        self.project = _conv_bn(hidden, oup, 1, act=False)
        self.residual = stride == 1 and inp == oup

    def forward(self, x):
        y = self.block(x)
        scale = self.fc2(nn.functional.silu(self.fc1(nn.functional.adaptive_avg_pool2d(y, 1))))
        y = self.project(y * torch.sigmoid(scale))
        return x + y if self.residual else y


def efficientnet_b0() -> nn.Module:
    """torchvision's EfficientNet-B0: MBConv blocks with squeeze-and-excitation."""
    settings = [(1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)]
    return _mobile_net([(_MBConv, r, k, s, c, n) for r, k, s, c, n in settings], nn.SiLU)


class _Odd(nn.Module):
    """Shapes the op cannot state literally, 1-D convolution and a 3-D linear."""

    def __init__(self) -> None:
        super().__init__()
        self.dilated = nn.Conv2d(8, 16, 3, padding=2, dilation=2)
        self.strided = nn.Conv2d(16, 16, (3, 1), stride=(2, 1), padding=(1, 0), groups=4)
        self.conv1d = nn.Conv1d(16, 32, 5, padding=2)
        self.proj = nn.Linear(32, 24)

    def forward(self, x):
        x = self.strided(self.dilated(x))               # [1, 16, 8, 16]
        x = self.conv1d(x.flatten(2))                    # [1, 32, 128]
        return torch.relu(self.proj(x.transpose(1, 2)))  # [1, 128, 24]


def odd() -> nn.Module:
    return _Odd()


class _Unsupported(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.up = nn.ConvTranspose2d(8, 4, 2, stride=2)

    def forward(self, x):
        return self.up(self.conv(x))


def unsupported() -> nn.Module:
    return _Unsupported()


class _Decoder(nn.Module):
    """A Llama-shaped decoder: fused QKV, GQA SDPA, gated MLP; token ids in. With ``cache``
    > 0 it is one decode step: the new tokens attend to ``cache`` earlier ones (a KV cache)."""

    def __init__(self, hidden: int = 64, heads: int = 8, kv_heads: int = 2, layers: int = 2,
                 cache: int = 0) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.d, self.cache = heads, kv_heads, hidden // heads, cache
        self.embed = nn.Embedding(100, hidden)
        self.layers = nn.ModuleList()
        for _ in range(layers):
            block = nn.Module()
            block.qkv = nn.Linear(hidden, (heads + 2 * kv_heads) * self.d, bias=False)
            block.o = nn.Linear(hidden, hidden, bias=False)
            block.gate = nn.Linear(hidden, 4 * hidden, bias=False)
            block.up = nn.Linear(hidden, 4 * hidden, bias=False)
            block.down = nn.Linear(4 * hidden, hidden, bias=False)
            self.layers.append(block)

    def _heads(self, x, count: int):
        b, t, _ = x.shape
        x = x.view(b, t, count, self.d).transpose(1, 2)
        if self.cache:
            past = torch.zeros(b, count, self.cache, self.d, device=x.device)
            x = torch.cat([past, x], dim=2)
        return x

    def forward(self, ids):
        x = self.embed(ids)
        b, t, _ = x.shape
        for blk in self.layers:
            q, k, v = blk.qkv(x).split([self.heads * self.d, self.kv_heads * self.d,
                                        self.kv_heads * self.d], dim=-1)
            q = q.view(b, t, self.heads, self.d).transpose(1, 2)
            k, v = self._heads(k, self.kv_heads), self._heads(v, self.kv_heads)
            a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=not self.cache,
                                                           enable_gqa=True)
            x = x + blk.o(a.transpose(1, 2).reshape(b, t, -1))
            x = x + blk.down(nn.functional.silu(blk.gate(x)) * blk.up(x))
        return x


def decoder() -> nn.Module:
    return _Decoder()


def decode_step() -> nn.Module:
    return _Decoder(cache=40)


class _CrossDecoder(nn.Module):
    """A decoder layer and an nn.MultiheadAttention attending 16 target tokens to a memory of
    6 (an encoder output shorter than the target)."""

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.TransformerDecoderLayer(64, 4, dim_feedforward=128, batch_first=True)
        self.cross = nn.MultiheadAttention(64, 4, batch_first=True)

    def forward(self, x):
        memory = x[:, :6]
        x = self.layer(x, memory)
        return self.cross(x, memory, memory, need_weights=False)[0]


def cross_decoder() -> nn.Module:
    return _CrossDecoder()


def vit_block() -> nn.Module:
    return nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)


def _src(factory: str) -> str:
    importlib.import_module(__name__)  # the module is importable by this name
    return f"{__name__}:{factory}"


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def _forward_macs(path: Path) -> int:
    """Dense forward MACs of a workload file as the scheduler will run it."""
    workload = load_workload(path)
    layers = expand(workload)
    macs = sum(t.macs_dense * t.copies * t.repeat for g in lower(layers, "inference") for t in g)
    return macs + sum(2 * layer.rows * layer.in_features * layer.out_features * layer.batch_count * layer.repeat
                      for layer in layers if layer.kind == "attention")


def _write(tmp_path: Path, model, name: str = "w.yaml", **kwargs) -> Path:
    path = tmp_path / name
    path.write_text(workload_text(model, hardware="tiny", **kwargs))
    return path


def _zoo_layers(tmp_path: Path, model: str):
    path = tmp_path / "zoo.yaml"
    path.write_text(f"version: 1\nname: z\nhardware: tiny\noperations:\n"
                    f"  - {{op: model, model: {model}, batch: 1}}\n")
    return expand(load_workload(path))


def _shapes(layers) -> list[tuple[int, int, int, int]]:
    return sorted((layer.rows, layer.in_features, layer.out_features, layer.batch_count) for layer in layers)


def _one_line_error(capsys, argv: list[str]) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --------------------------------------------------------------------------------------------
# torch
# --------------------------------------------------------------------------------------------


def test_torch_resnet18_gives_the_zoo_layers_and_macs(tmp_path):
    model = import_model(_src("resnet18"))
    path = _write(tmp_path, model)
    assert _forward_macs(path) == model.macs == RESNET18_MACS
    assert _shapes(expand(load_workload(path))) == _shapes(_zoo_layers(tmp_path, "resnet18"))
    names = [op.name for op in model.ops]
    assert names[:3] == ["conv1", "layer1.0.conv1", "layer1.0.conv2"]
    assert "layer2.0.downsample.0" in names and names[-1] == "fc"
    kinds = {u.category for u in model.unmapped}
    assert kinds == {"normalization", "activation", "pooling", "element-wise"}
    bn = sum(u.elements for u in model.unmapped if u.category == "normalization")
    # one BatchNorm per convolution, over its output
    assert bn == sum(layer.rows * layer.out_features for layer in _zoo_layers(tmp_path, "resnet18")
                     if layer.kind == "conv2d")


def test_torch_mobilenet_v2_depthwise_and_published_macs(tmp_path):
    model = import_model(_src("mobilenet_v2"))
    path = _write(tmp_path, model)
    macs = _forward_macs(path)
    assert macs == model.macs
    assert abs(macs - 300e6) / 300e6 < 0.01, macs  # published: 300 M MACs
    depthwise = [op for op in model.ops if op.fields.get("groups", 1) > 1]
    assert len(depthwise) == 17
    assert all(op.fields["groups"] == op.fields["in_channels"] == op.fields["out_channels"]
               for op in depthwise)


def test_torch_efficientnet_b0_published_macs(tmp_path):
    model = import_model(_src("efficientnet_b0"))
    macs = _forward_macs(_write(tmp_path, model))
    # torchvision's own definition gives the same 385,814,752 (docs/import.md)
    assert macs == model.macs == 385_814_752
    assert abs(macs - 390e6) / 390e6 < 0.02  # published: 390 M MACs
    assert sum(1 for op in model.ops if op.fields.get("groups", 1) > 1) == 16
    assert sum(1 for op in model.ops if op.name.endswith((".fc1", ".fc2"))) == 32  # SE blocks


def test_training_import_with_bdwp_keeps_unfit_layers_dense(tmp_path):
    model = import_model(_src("mobilenet_v2"))
    path = _write(tmp_path, model, mode="training", sparsity=parse_sparsity("bdwp:2:8"))
    text = path.read_text()
    assert "# dense: in_channels=3 is not a multiple of m=8" in text
    assert "grouped convolution: N:M on grouped weights is not supported yet" in text
    layers = expand(load_workload(path))
    assert {layer.sparsity.kind for layer in layers} == {"bdwp", "dense"}
    grouped = [layer for layer in layers if layer.block_diagonal > 1 or layer.batch_count > 1]
    assert len(grouped) == 17 and all(layer.sparsity.kind == "dense" for layer in grouped)


def test_shapes_an_op_cannot_state_keep_their_gemm(tmp_path):
    model = import_model(_src("odd"), (1, 8, 16, 16))
    dilated, strided, conv1d, proj = model.ops
    # dilation 2, padding 2 keeps 16x16: the same GEMM as a 3x3 conv over 18x18, no padding
    assert dilated.fields["input_size"] == 18 and "dilation 2x2" in dilated.note
    assert strided.fields["input_size"] == [10, 16] and strided.fields["groups"] == 4
    assert conv1d.fields["kernel"] == [1, 5] and conv1d.macs == 128 * 32 * 16 * 5
    assert proj.fields == {"op": "linear", "name": "proj", "in_features": 32, "out_features": 24,
                           "batch": 1, "tokens": 128}
    assert _forward_macs(_write(tmp_path, model)) == model.macs == (
        16 * 16 * 16 * 8 * 9 + 8 * 16 * 16 * 4 * 3 + 128 * 32 * 16 * 5 + 128 * 32 * 24)


class _Gram(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(32, 24)

    def forward(self, x):
        y = self.proj(x.mT)                            # a tensor property: no unknown op
        return torch.baddbmm(y.new_zeros(1), y, y.mT)  # y·yᵀ: a product of two activations


def gram() -> nn.Module:
    return _Gram()


def test_tensor_properties_and_baddbmm(tmp_path):
    model = import_model(_src("gram"), (2, 32, 16), strict=True)
    proj, product = model.ops
    assert proj.fields["tokens"] == 16 and proj.fields["batch"] == 2
    assert product.fields == {"op": "gemm", "name": "baddbmm", "m": 16, "k": 24, "n": 16,
                              "repeat": 2}
    assert not product.weights and model.unmapped == []


def test_decoder_attention_becomes_attention_ops_and_runs(tmp_path):
    model = import_model(_src("decoder"), (2, 32))
    kinds = [op.kind for op in model.ops]
    assert kinds == ["linear", "attention", "linear", "linear", "linear", "linear"] * 2
    att = model.ops[1].fields
    assert (att["heads"], att["kv_heads"], att["kv_len"], att["head_dim"], att["batch"],
            att.get("causal")) == (8, 2, 32, 8, 2, True)
    assert any(u.category == "embedding" for u in model.unmapped)
    path = _write(tmp_path, model)
    out = tmp_path / "run"
    assert main(["run", str(path), "--out", str(out), "--quiet"]) == 0
    # training runs attention ops (forward and backward): they stay as inference writes them
    train = _write(tmp_path, model, "t.yaml", mode="training")
    train_ops = load_workload(train).operations
    assert [op.op for op in train_ops] == kinds
    assert train_ops == load_workload(path).operations
    assert _forward_macs(train) == _forward_macs(path) == model.macs


def test_cross_attention_to_a_shorter_memory_imports_and_runs(tmp_path, capsys):
    """16 queries against a 6-token memory (refused before: 'q_len=16 exceeds kv_len=6'):
    non-causal dense attention ops with q_len 16, which run in inference and in training
    (forward and backward) with q · kv · d MACs per head for QKᵀ and for PV, and the same
    results on the fast engine as on SimPy."""
    model = import_model(_src("cross_decoder"), (2, 16, 64))
    att = [op.fields for op in model.ops if op.kind == "attention"]
    assert [(a["name"], a.get("q_len"), a["kv_len"], a["heads"], a["head_dim"], a["batch"],
             a.get("causal", False)) for a in att] == [
        ("layer.self_attn", None, 16, 4, 16, 2, False),
        ("layer.multihead_attn", 16, 6, 4, 16, 2, False),
        ("cross", 16, 6, 4, 16, 2, False)]
    cross = 2 * 2 * 4 * 16 * 6 * 16  # 2 products · batch · heads · q · kv · d
    dense = {"layer.self_attn": 2 * 2 * 4 * 16 * 16 * 16, "layer.multihead_attn": cross,
             "cross": cross}
    for mode in ("inference", "training"):
        path = tmp_path / f"{mode}.yaml"
        assert main(["import", _src("cross_decoder"), "--input-shape", "2,16,64", "--out",
                     str(path), "--hardware", "sat_vcu1525", "--mode", mode]) == 0, \
            capsys.readouterr().err
        docs = []
        for engine in ("simpy", "fast"):
            out = tmp_path / f"{mode}-{engine}"
            assert main(["run", str(path), "--out", str(out), "--quiet", "--engine", engine]) == 0, \
                capsys.readouterr().err
            docs.append(json.loads((out / "results.json").read_text()))
        assert docs[0]["attention"] == docs[1]["attention"]
        assert docs[0]["summary"]["total_cycles"] == docs[1]["summary"]["total_cycles"]
        rows = {r["layer"]: r for r in docs[0]["attention"]}
        for name, macs in dense.items():
            assert rows[name]["macs_executed"] == rows[name]["macs_dense"] == macs
            if mode == "training":
                assert 2 * rows[f"{name}.backward"]["macs_executed"] == 5 * macs


def test_decode_step_becomes_decode_attention_and_runs(tmp_path):
    model = import_model(_src("decode_step"), (2, 1))
    att = [op.fields for op in model.ops if op.kind == "attention"]
    assert len(att) == 2 and att[0]["phase"] == "decode" and att[0]["kv_len"] == 41
    assert att[0]["kv_heads"] == 2 and "q_len" not in att[0]
    linears = [op for op in model.ops if op.kind == "linear"]
    assert all(op.fields["batch"] == 2 and "tokens" not in op.fields for op in linears)
    path = _write(tmp_path, model)
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert _forward_macs(path) == model.macs


def test_training_import_writes_a_decode_step_as_dense_products(tmp_path, capsys):
    """Training refuses decode attention (WorkloadSpec._attention_training), so a training
    import writes each decode step as its two products, one query row against the 41-token
    cache, with a note saying why; the forward MACs stay the model's."""
    model = import_model(_src("decode_step"), (2, 1))
    kept = _write(tmp_path, model, "kept.yaml")  # the decode attention ops, in inference
    kept.write_text(kept.read_text().replace("mode: inference", "mode: training"))
    with pytest.raises(SpecError, match="phase: decode needs mode: inference"):
        load_workload(kept)
    path = _write(tmp_path, model, "t.yaml", mode="training")
    rows = [line for line in path.read_text().splitlines() if "attention" in line]
    assert [line.split('"')[1] for line in rows] == [
        "attention.scores", "attention.context", "attention.1.scores", "attention.1.context"]
    assert all("two dense products: phase: decode needs mode: inference" in line for line in rows)
    gemms = [op for op in load_workload(path).operations if op.op == "gemm"]
    assert [(op.m, op.k, op.n, op.repeat) for op in gemms] == [(1, 8, 41, 16), (1, 41, 8, 16)] * 2
    assert _forward_macs(path) == model.macs
    assert main(["run", str(path), "--out", str(tmp_path / "run"), "--quiet"]) == 0, \
        capsys.readouterr().err


def test_multihead_attention_module(tmp_path):
    model = import_model(_src("vit_block"), (2, 16, 64))
    names = [op.name for op in model.ops]
    assert names == ["self_attn.in_proj", "self_attn", "self_attn.out_proj", "linear1", "linear2"]
    assert model.ops[0].fields["out_features"] == 192
    assert model.ops[1].fields["heads"] == 4 and model.ops[1].fields["head_dim"] == 16
    assert _forward_macs(_write(tmp_path, model)) == model.macs


# --------------------------------------------------------------------------------------------
# ONNX
# --------------------------------------------------------------------------------------------


def _export(module, shape, path: Path) -> Path:
    buf = io.BytesIO()
    with pytest.warns(DeprecationWarning):  # the TorchScript exporter needs no onnxscript
        torch.onnx.export(module.eval(), (torch.randn(*shape),), buf, dynamo=False)
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.parametrize("factory, shape", [("resnet18", (1, 3, 224, 224)),
                                            ("mobilenet_v2", (1, 3, 224, 224)),
                                            ("odd", (1, 8, 16, 16))])
def test_onnx_export_and_torch_give_identical_workloads(tmp_path, factory, shape):
    from_torch = import_model(_src(factory), shape)
    onnx_file = _export(globals()[factory](), shape, tmp_path / f"{factory}.onnx")
    from_onnx = import_model(str(onnx_file))
    a = load_workload(_write(tmp_path, from_torch, "a.yaml"))
    b = load_workload(_write(tmp_path, from_onnx, "b.yaml"))
    assert len(a.operations) == len(from_torch.ops) > 3
    assert a.operations == b.operations
    assert from_onnx.macs == from_torch.macs


def test_onnx_input_shape_sets_the_batch(tmp_path):
    onnx_file = _export(resnet18(), (1, 3, 224, 224), tmp_path / "r.onnx")
    model = import_model(str(onnx_file), (4, 3, 224, 224))
    assert model.macs == 4 * RESNET18_MACS


# --------------------------------------------------------------------------------------------
# SCALE-Sim
# --------------------------------------------------------------------------------------------


def _resnet18_topology() -> list[str]:
    """ResNet-18 in SCALE-Sim's convolution format: IFMAP sizes include the padding."""
    rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, "
            "Num Filter, Strides,", "Conv1, 230, 230, 7, 7, 3, 64, 2,"]
    size, cin = 56, 64
    for stage, width in enumerate((64, 128, 256, 512), start=1):
        for block in range(2):
            stride = 2 if stage > 1 and block == 0 else 1
            rows.append(f"L{stage}_{block}_a, {size + 2}, {size + 2}, 3, 3, {cin}, {width}, {stride},")
            out = size // stride
            rows.append(f"L{stage}_{block}_b, {out + 2}, {out + 2}, 3, 3, {width}, {width}, 1,")
            if stride != 1 or cin != width:
                rows.append(f"L{stage}_{block}_ds, {size}, {size}, 1, 1, {cin}, {width}, {stride},")
            size, cin = out, width
    rows.append("FC, 1, 1, 1, 1, 512, 1000, 1,")
    return rows


def test_scalesim_resnet18_gives_the_zoo_macs(tmp_path):
    csv = tmp_path / "resnet18.csv"
    csv.write_text("\n".join(_resnet18_topology()) + "\n")
    zoo = _zoo_layers(tmp_path, "resnet18")
    zoo_conv = sum(layer.rows * layer.in_features * layer.out_features for layer in zoo if layer.kind == "conv2d")
    model = import_model(str(csv))
    convs = [op for op in model.ops if op.name != "FC"]
    assert len(convs) == 20 and sum(op.macs for op in convs) == zoo_conv == 1_813_561_344
    path = tmp_path / "w.yaml"
    assert main(["import", str(csv), "--out", str(path), "--hardware", "tiny"]) == 0
    assert _forward_macs(path) == RESNET18_MACS
    assert _shapes(expand(load_workload(path))) == _shapes(zoo)


def test_scalesim_gemm_format_and_depthwise(tmp_path):
    gemm = tmp_path / "g.csv"
    gemm.write_text("Layer, M, N, K,\nqkv, 128, 2304, 768,\nfc1, 128, 3072, 768,\n")
    model = import_model(str(gemm))
    assert [op.fields for op in model.ops][0] == {"op": "gemm", "name": "qkv", "m": 128,
                                                  "k": 768, "n": 2304}
    assert model.macs == 128 * 768 * (2304 + 3072)
    dw = tmp_path / "dw.csv"
    dw.write_text("Layer name,IFMAP Height,IFMAP Width,Filter Height,Filter Width,Channels,"
                  "Num Filter,Stride height,Stride width,\nConv_DP1,114,114,3,3,32,1,1,1,\n"
                  "pw,56,56,1,1,32,64,1,1,\n")
    (dwop, pw) = import_model(str(dw)).ops
    assert dwop.fields["groups"] == 32 and dwop.macs == 112 * 112 * 32 * 9
    assert pw.macs == 56 * 56 * 32 * 64


# --------------------------------------------------------------------------------------------
# CLI and bad input: one line, exit 2
# --------------------------------------------------------------------------------------------


def test_cli_writes_a_workload_that_runs_and_prints_coverage(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    assert main(["import", _src("odd"), "--input-shape", "1,8,16,16", "--out", str(path),
                 "--hardware", "tiny"]) == 0
    out = capsys.readouterr().out
    assert "convolution" in out and "activation" in out and f"wrote {path}" in out
    assert main(["run", str(path), "--out", str(tmp_path / "o"), "--quiet"]) == 0


def test_strict_rejects_an_unsupported_operator(tmp_path, capsys):
    path = tmp_path / "w.yaml"
    argv = ["import", _src("unsupported"), "--input-shape", "1,3,8,8", "--out", str(path)]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "unsupported operators: conv_transpose2d" in out
    err = _one_line_error(capsys, argv + ["--strict", "--force"])
    assert "'conv_transpose2d' is not supported" in err and "up" in err


def test_a_file_that_is_not_onnx(tmp_path, capsys):
    bad = tmp_path / "model.onnx"
    bad.write_bytes(b"\x00\xffnot a protobuf at all" * 10)
    err = _one_line_error(capsys, ["import", str(bad), "--out", str(tmp_path / "w.yaml")])
    assert f"{bad}: not an ONNX model" in err


def test_a_csv_with_a_missing_column(tmp_path, capsys):
    csv = tmp_path / "t.csv"
    csv.write_text("Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, "
                   "Channels, Num Filter,\nc1, 10, 10, 3, 3, 8, 8,\n")
    err = _one_line_error(capsys, ["import", str(csv), "--out", str(tmp_path / "w.yaml")])
    assert f"{csv}:1: missing column 'Strides'" in err
    csv.write_text("Layer, M, N, K,\nfc, 4, x, 8,\n")
    err = _one_line_error(capsys, ["import", str(csv), "--out", str(tmp_path / "w.yaml")])
    assert f"{csv}:2: column 'N': expected an integer, got 'x'" in err


def test_unknown_factory_gets_a_did_you_mean(tmp_path, capsys):
    err = _one_line_error(capsys, ["import", f"{__name__}:resnet81", "--out",
                                   str(tmp_path / "w.yaml")])
    assert "did you mean 'resnet18'?" in err


def _torchvision_imports() -> bool:
    try:
        import torchvision.models  # noqa: F401
    except Exception:
        return False
    return True


needs_torchvision = pytest.mark.skipif(
    not _torchvision_imports(), reason="torchvision does not import beside this torch build")


@needs_torchvision
def test_unknown_torchvision_name_gets_a_did_you_mean(tmp_path, capsys):
    err = _one_line_error(capsys, ["import", "torchvision:resnet81", "--out",
                                   str(tmp_path / "w.yaml")])
    assert "no such torchvision model; did you mean 'resnet18'" in err


def test_torchvision_that_does_not_import_is_one_line(tmp_path, capsys):
    if _torchvision_imports():
        pytest.skip("torchvision imports here")
    err = _one_line_error(capsys, ["import", "torchvision:resnet18", "--out",
                                   str(tmp_path / "w.yaml")])
    assert "torchvision does not import here" in err


@needs_torchvision
@pytest.mark.parametrize("name, zoo, published, tolerance", [
    ("resnet18", "resnet18", None, 0), ("resnet50", "resnet50", None, 0),
    ("vgg16", "vgg16", None, 0), ("mobilenet_v2", None, 300e6, 0.01),
    ("efficientnet_b0", None, 390e6, 0.02)])
def test_torchvision_models(tmp_path, name, zoo, published, tolerance):
    model = import_model(f"torchvision:{name}")
    macs = _forward_macs(_write(tmp_path, model))
    if zoo:
        layers = _zoo_layers(tmp_path, zoo)
        assert macs == sum(layer.rows * layer.in_features * layer.out_features for layer in layers)
    else:
        assert math.isclose(macs, published, rel_tol=tolerance), macs


def test_torchvision_path_with_a_stand_in_package(tmp_path, capsys, monkeypatch):
    """The torchvision: source against a stand-in ``torchvision.models`` (list_models,
    get_model), so the did-you-mean and the meta-device build run where torchvision does not
    import."""
    import sys
    import types

    built = []

    def get_model(name, weights=None):
        assert weights is None  # architecture only: nothing is downloaded
        module = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}[name]()
        built.append(next(module.parameters()).device.type)
        return module

    models = types.ModuleType("torchvision.models")
    models.list_models = lambda: ["mobilenet_v2", "resnet18", "resnet50"]
    models.get_model = get_model
    package = types.ModuleType("torchvision")
    package.models = models
    monkeypatch.setitem(sys.modules, "torchvision", package)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    assert import_model("torchvision:resnet18").macs == RESNET18_MACS
    assert built == ["meta"]
    err = _one_line_error(capsys, ["import", "torchvision:resnt18", "--out", str(tmp_path / "w.yaml")])
    assert "torchvision:resnt18: no such torchvision model; did you mean 'resnet18'" in err


def _onnx_file(path: Path) -> Path:
    """A hand-built graph: a SAME-padded strided Conv, Gemm with transB, a MatMul of two
    activations, and an operator archsim does not know."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.zeros((8, 3, 3, 3), np.float32), "conv.weight")
    fc = numpy_helper.from_array(np.zeros((10, 8 * 4 * 4), np.float32), "fc.weight")
    nodes = [
        helper.make_node("Conv", ["x", "conv.weight"], ["c"], "/conv/Conv", auto_pad="SAME_UPPER",
                         strides=[2, 2]),
        helper.make_node("Flatten", ["c"], ["f"], "/Flatten"),
        helper.make_node("Gemm", ["f", "fc.weight"], ["y"], "/fc/Gemm", transB=1),
        helper.make_node("MatMul", ["y", "yt"], ["s"], "/attn/MatMul"),
        helper.make_node("Transpose", ["y"], ["yt"], "/attn/Transpose"),
        helper.make_node("Mystery", ["s"], ["z"], "/head/Mystery", domain=""),
    ]
    nodes[3], nodes[4] = nodes[4], nodes[3]
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 7, 7])],
        [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], [w, fc])
    path.write_bytes(helper.make_model(graph).SerializeToString())
    return path


def test_onnx_graph_ops_shapes_and_strict(tmp_path, capsys):
    path = _onnx_file(tmp_path / "g.onnx")
    model = import_model(str(path), (2, 3, 7, 7))
    conv, fc, mm = model.ops
    # SAME_UPPER, stride 2 on 7x7: 4x4 out, pads (1, 1) — written literally
    assert conv.fields == {"op": "conv2d", "name": "conv", "in_channels": 3, "out_channels": 8,
                           "kernel": 3, "stride": 2, "padding": 1, "input_size": 7, "batch": 2}
    assert conv.macs == 2 * 4 * 4 * 8 * 3 * 9
    assert fc.fields == {"op": "linear", "name": "fc", "in_features": 128, "out_features": 10,
                         "batch": 2}
    assert mm.fields == {"op": "gemm", "name": "attn", "m": 2, "k": 10, "n": 2} and not mm.weights
    assert [u.source for u in model.unmapped] == ["Mystery"]
    err = _one_line_error(capsys, ["import", str(path), "--strict", "--input-shape", "2,3,7,7",
                                   "--out", str(tmp_path / "w.yaml")])
    assert "'Mystery' is not supported" in err
    err = _one_line_error(capsys, ["import", str(path), "--input-shape", "2,3,7",
                                   "--out", str(tmp_path / "w.yaml")])
    assert "--input-shape has 3 dims, the model's input 'x' has 4" in err


def test_onnx_layer_names_from_parameters_or_scopes():
    from onnx import helper

    from workloads.importers.graph import module_path
    from workloads.importers.onnx_graph import _node_name

    # torch.export-based exporter: flat node names, parameter names kept
    node = helper.make_node("Conv", ["x", "layer1.0.conv1.weight"], ["y"], "node_conv2d_3")
    assert _node_name(node, node.input[1]) == "layer1.0.conv1"
    # TorchScript exporter with BatchNorm folded: the weight is a new constant, scopes name it
    node = helper.make_node("Conv", ["x", "onnx::Conv_193"], ["y"],
                            "/features/features.1/conv/conv.0/conv.0.0/Conv")
    assert _node_name(node, node.input[1]) == "features.1.conv.0.0"
    assert module_path(["layer1", "layer1.0", "conv1"]) == "layer1.0.conv1"
    assert module_path(["encoder", "layers", "encoder_layer_0", "mlp"]) == (
        "encoder.layers.encoder_layer_0.mlp")


@pytest.mark.parametrize("sparsity", ["nm:2:4:sideways", "bdwp:2:8:backwards", "nm:2:4:in:x"])
def test_a_bad_sparsity_suffix_is_one_line(tmp_path, capsys, sparsity):
    err = _one_line_error(capsys, ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out",
                                   str(tmp_path / "w.yaml"), "--sparsity", sparsity])
    assert f"--sparsity {sparsity!r}: expected dense, nm:N:M[:in|out]" in err


def test_an_out_that_cannot_be_written_is_refused_before_importing(tmp_path, capsys):
    argv = ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out"]
    err = _one_line_error(capsys, argv + [str(tmp_path)])
    assert f"--out {tmp_path}: is a folder; name the file, e.g. {tmp_path / 'model.yaml'}" in err
    (tmp_path / "f").write_text("mine\n")
    err = _one_line_error(capsys, argv + [str(tmp_path / "f" / "w.yaml")])
    assert f"--out {tmp_path / 'f' / 'w.yaml'}: is inside {tmp_path / 'f'}, a file; " \
           "expected a folder" in err
    assert "not a usable path" in _one_line_error(capsys, argv + ["a\0b.yaml"])


def test_out_in_a_new_folder_creates_it_as_run_out_does(tmp_path, capsys, monkeypatch):
    """Missing folders above --out are created once the workload loads (it was a traceback,
    then an error); a refused workload leaves no folder behind. `--out .` names a folder."""
    monkeypatch.chdir(tmp_path)
    argv = ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out"]
    assert "--out .: is a folder" in _one_line_error(capsys, argv + ["."])
    _one_line_error(capsys, argv + ["new/sub/w.yaml", "--sparsity", "nm:3:7"])
    assert not (tmp_path / "new").exists()
    assert main(argv + ["new/sub/w.yaml"]) == 0
    assert load_workload(tmp_path / "new" / "sub" / "w.yaml").name == "odd"


_built: list[str] = []


def counted() -> nn.Module:
    _built.append("counted")
    return _Odd()


@pytest.mark.parametrize("sparsity, message", [
    ("nm:3:7", "--sparsity nm:3:7: m must be a power of two no larger than 16, got m=7"),
    ("bdwp:5:4", "--sparsity bdwp:5:4: n must satisfy 0 < n <= m, got n=5, m=4"),
    ("nm:0:4", "--sparsity nm:0:4: n must satisfy 0 < n <= m, got n=0, m=4"),
    ("nm:1:16", "--sparsity nm:1:16: N:M 1:16 is not among hardware 'tiny''s nm_patterns (1:2, "
                "2:4, 1:4, 2:8); choose one of them, or a --hardware that runs it"),
    ("bdwp:1:8", "--sparsity bdwp:1:8: N:M 1:8 is not among hardware 'tiny''s nm_patterns"),
])
def test_an_invalid_n_m_is_refused_before_the_model_is_built(tmp_path, capsys, sparsity, message):
    """It was found only once the traced model's workload was loaded: a large model was built
    and traced first. So was a pattern that --hardware does not run."""
    _built.clear()
    err = _one_line_error(capsys, ["import", _src("counted"), "--input-shape", "1,8,16,16",
                                   "--out", str(tmp_path / "w.yaml"), "--sparsity", sparsity,
                                   "--hardware", "tiny"])
    assert f"archsim: error: {message}" in err, err
    assert _built == []


@pytest.mark.parametrize("args, message", [
    (["--hardware", "nohw"], "--hardware nohw: unknown hardware preset 'nohw'; known presets"),
    (["--hardware", "sat_vcu"], "--hardware sat_vcu: unknown hardware preset 'sat_vcu'"),
    (["--hardware", "hw/none.yaml"], "--hardware hw/none.yaml: file not found"),
    (["--sparsity", "nm:3:7"], "--sparsity nm:3:7: m must be a power of two"),
    (["--sparsity", "bdwp:5:4"], "--sparsity bdwp:5:4: n must satisfy 0 < n <= m"),
    (["--sparsity", "nm:1:16", "--hardware", "tiny"],
     "--sparsity nm:1:16: N:M 1:16 is not among hardware 'tiny''s nm_patterns"),
])
def test_a_workload_that_would_not_load_is_not_written(tmp_path, capsys, args, message):
    """The generated text is loaded before it is written: a file already there stays as it was,
    and the error blames the argument, not the generated file (it said 'w.yaml (as generated;
    not written):8: sparsity: ...')."""
    out = tmp_path / "w.yaml"
    out.write_text("# the user's own file\n")
    err = _one_line_error(capsys, ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out",
                                   str(out), "--force", *args])
    assert f"archsim: error: {message}" in err and "as generated" not in err, err
    assert out.read_text() == "# the user's own file\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.yaml"]  # no trial file left


def test_an_existing_out_file_is_replaced_only_with_force(tmp_path, capsys, monkeypatch):
    """--out named a workload the user may have edited since an earlier import: it was
    replaced without a word. Refused before the model is read; --force replaces it."""
    out = tmp_path / "w.yaml"
    out.write_text("# the user's own file\n")
    argv = ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out", str(out)]
    err = _one_line_error(capsys, argv)
    assert err == (f"archsim: error: {tmp_path} already holds a workload you may have written or "
                   "edited (w.yaml); pass --force to replace it, or choose another --out\n")
    assert out.read_text() == "# the user's own file\n"
    assert main([*argv, "--force"]) == 0
    assert "op:" in out.read_text()
    monkeypatch.chdir(tmp_path)  # it is named, not as '.'
    assert _one_line_error(capsys, [*argv[:-1], "w.yaml"]).startswith(
        "archsim: error: the current folder already holds a workload")


def test_the_trial_file_never_replaces_a_file_of_the_users(tmp_path, capsys):
    """The workload is loaded from a trial file beside --out: it was always '.w.yaml.importing',
    overwritten and then deleted, whoever's file it was."""
    theirs = tmp_path / ".w.yaml.importing"
    theirs.write_text("mine\n")
    assert main(["import", _src("odd"), "--input-shape", "1,8,16,16", "--out",
                 str(tmp_path / "w.yaml")]) == 0
    assert theirs.read_text() == "mine\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".w.yaml.importing", "w.yaml"]


def test_a_hardware_file_is_found_from_the_workloads_folder(tmp_path, capsys, monkeypatch):
    """--hardware names a file from the current folder, the workload from its own: hw/t.yaml
    was written as is into out/w.yaml, which then looked for out/hw/t.yaml."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hw").mkdir()
    (tmp_path / "hw" / "t.yaml").write_text(
        (Path(__file__).parents[2] / "workloads" / "hardware" / "tiny.yaml").read_text())
    assert main(["import", _src("odd"), "--input-shape", "1,8,16,16", "--hardware", "hw/t.yaml",
                 "--out", "out/w.yaml"]) == 0
    assert 'hardware: "../hw/t.yaml"' in (tmp_path / "out" / "w.yaml").read_text()
    assert load_workload(tmp_path / "out" / "w.yaml").hardware.name == "tiny"


def test_odd_characters_in_arguments_stay_inside_the_header_comment(tmp_path, capsys,
                                                                     monkeypatch):
    """The command line is quoted in a comment: a newline in --out ended the comment, a control
    character made the YAML invalid."""
    out = tmp_path / "a\nb\x01.yaml"
    argv = ["import", _src("odd"), "--input-shape", "1,8,16,16", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", ["archsim", *argv])
    assert main(argv) == 0
    assert load_workload(out).name == "odd"
    assert "a\\nb\\x01.yaml`." in out.read_text().splitlines()[0]


class _ValueBranch(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return self.fc(x) if x.sum() > 0 else x  # control flow on values, not shapes


class _Tokens(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb, self.fc = nn.Embedding(100, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc(self.emb(x))


class _Recurrent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lstm, self.fc = nn.LSTM(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.lstm(x)[0])


def value_branch() -> nn.Module:
    return _ValueBranch()


def tokens() -> nn.Module:
    return _Tokens()


def recurrent() -> nn.Module:
    return _Recurrent()


def test_control_flow_on_values_is_one_line_that_says_so(tmp_path, capsys):
    err = _one_line_error(capsys, ["import", _src("value_branch"), "--input-shape", "1,8",
                                   "--out", str(tmp_path / "w.yaml")])
    assert "the model has data-dependent control flow, which tracing cannot follow" in err
    assert "reads tensor values" in err and "shape-based" in err


def test_a_token_model_needs_an_input_shape(tmp_path, capsys):
    """It was traced with the default image shape as token ids, silently."""
    err = _one_line_error(capsys, ["import", _src("tokens"), "--out", str(tmp_path / "w.yaml")])
    assert "takes token ids" in err and "--input-shape BATCH,SEQ_LEN" in err
    assert main(["import", _src("tokens"), "--input-shape", "2,5", "--out",
                 str(tmp_path / "w.yaml")]) == 0


def test_unsupported_operators_are_named_in_the_workload_header(tmp_path):
    out = tmp_path / "w.yaml"
    assert main(["import", _src("recurrent"), "--input-shape", "3,1,8", "--out", str(out)]) == 0
    assert "# Unsupported, so their work is NOT in this workload: lstm." in out.read_text()
