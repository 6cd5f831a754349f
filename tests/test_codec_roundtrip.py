"""pack → unpack is exact; sizes are honest; sparse tensors land near the Shannon bound."""

from __future__ import annotations

import importlib

import json
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from torch import nn

from netrazor.codec import pack, read_nrz, unpack, unpack_state_dict, verify
from netrazor.codec.entropy import empirical_entropy_bits
from netrazor.errors import FormatError, ModelError
from netrazor.quant import quantize_model


def _bits(t: torch.Tensor) -> torch.Tensor:
    """Bit pattern view so comparisons are bitwise, not numeric."""
    t = t.contiguous()
    if t.dtype == torch.bool or t.numel() == 0:
        return t
    return t.reshape(-1).view(torch.uint8)


def _prune(model: nn.Module, density: float, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand(p.shape, generator=g) < density).float())
    return model


class Odd(nn.Module):
    """Not a zoo model: conv + BN (int64 buffer) + a bf16 buffer, a 0-dim and an empty tensor."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 10)
        self.register_buffer("bf16", torch.randn(5, 7).to(torch.bfloat16))
        self.register_buffer("scalar", torch.tensor(3.25))
        self.register_buffer("empty", torch.zeros(0, 4))

    def forward(self, x):
        return self.fc(torch.relu(self.bn(self.conv(x))).flatten(1)) * self.scalar


def test_state_dict_roundtrip_is_bitwise_for_every_dtype(tmp_path):
    torch.manual_seed(0)
    model = _prune(Odd(), 0.2)
    model.bn.num_batches_tracked += 7
    q = quantize_model(model, 3, method="kmeans")
    report = pack(q.model, tmp_path / "odd.nrz")
    state = unpack_state_dict(tmp_path / "odd.nrz")
    ref = q.model.state_dict()
    assert set(state) == set(ref)
    for k, v in ref.items():
        assert state[k].dtype == v.dtype and state[k].shape == v.shape, k
        assert torch.equal(_bits(state[k]), _bits(v)), k
    kinds = {row["name"]: row["kind"] for row in report.tensors}
    assert kinds["fc.weight"] == "sparse" and kinds["fc.bias"] == "raw" and kinds["bn.num_batches_tracked"] == "raw"
    with pytest.raises(ModelError, match="unpack_state_dict"):
        unpack(tmp_path / "odd.nrz")
    rebuilt = Odd()
    rebuilt.load_state_dict(state)
    x = torch.randn(4, 3, 8, 8)
    assert torch.equal(rebuilt.eval()(x), q.model.eval()(x))


@pytest.mark.parametrize("name", ["lenet300", "lenet5"])
@pytest.mark.parametrize("method,per_channel,bits", [("kmeans", False, 4), ("uniform", True, 3), ("kmeans", False, 1)])
def test_zoo_models_unpack_to_identical_outputs(tmp_path, name, method, per_channel, bits):
    models = importlib.import_module("netrazor.models")
    torch.manual_seed(1)
    model = _prune(models.build_model(name), 0.08, seed=2)
    q = quantize_model(model, bits, method=method, per_channel=per_channel)
    path = tmp_path / f"{name}.nrz"
    report = pack(q.model, path, quantisation=q.to_dict())
    restored = unpack(path)
    x = torch.randn(16, 1, 28, 28)
    assert torch.equal(restored(x), q.model.eval()(x))
    for k, v in q.model.state_dict().items():
        assert torch.equal(_bits(restored.state_dict()[k]), _bits(v)), k
    header, _ = read_nrz(path)
    assert header["model"]["name"] == name
    assert header["quantisation"]["bits"] == q.bits
    # stages shrink in order and the ratio is dense / encoded
    assert report.dense_bytes > report.removal_bytes > report.quantized_bytes > report.encoded_bytes
    assert report.ratio == pytest.approx(report.dense_bytes / path.stat().st_size)
    assert report.summary_line() == (
        f"compressed from {report.dense_bytes} bytes to {path.stat().st_size} bytes ({report.ratio:.1f}×)"
    )


def test_pack_with_bits_quantises_a_copy_and_records_it(tmp_path):
    models = importlib.import_module("netrazor.models")
    model = _prune(models.build_model("lenet300"), 0.1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = pack(model, tmp_path / "m.nrz", bits={"fc1": 2, "fc2": 5})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # original untouched
    assert report.bits == {"fc1": 2, "fc2": 5}
    restored = unpack(tmp_path / "m.nrz")
    x = torch.randn(4, 1, 28, 28)
    assert torch.equal(restored(x), report.model.eval()(x))
    w = restored.fc1.weight
    assert torch.unique(w[w != 0]).numel() <= 4
    assert torch.equal(restored.fc3.weight, model.fc3.weight)  # not in the dict: kept float32, lossless


def test_encoded_never_exceeds_raw_even_for_dense_float_weights(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(300, 200), nn.Linear(200, 10))  # dense, unquantised: incompressible
    report = pack(model, tmp_path / "dense.nrz")
    raw = sum(v.numel() * 4 for v in model.state_dict().values())
    for row in report.tensors:
        assert row["section_bytes"] <= row["dense_bytes"] + 64
    # the file = raw tensors + small framing + the architecture JSON (a graph spec for this model)
    assert report.encoded_bytes <= raw + report.overhead["spec"] + 256
    state = unpack_state_dict(tmp_path / "dense.nrz")
    assert all(torch.equal(_bits(state[k]), _bits(v)) for k, v in model.state_dict().items())


@pytest.mark.parametrize("density", [0.01, 0.03, 0.05, 0.1])
def test_sparse_tensors_compress_near_the_shannon_bound(tmp_path, density):
    g = torch.Generator().manual_seed(int(density * 1000))
    w = torch.randn(400, 800, generator=g) * (torch.rand(400, 800, generator=g) < density)
    q = quantize_model(nn.Sequential(nn.Linear(800, 400, bias=False)), 4)
    with torch.no_grad():
        q.model[0].weight.copy_(w)
    q = quantize_model(q.model, 4)
    report = pack(q.model, tmp_path / "s.nrz")
    (row,) = report.tensors
    mask = (q.model[0].weight != 0).reshape(-1).numpy()
    mask_bound = empirical_entropy_bits(mask.astype(np.int32)) / 8
    idx = q.layers["0"].indices
    index_bound = empirical_entropy_bits(idx[idx >= 0].numpy()) / 8
    streams = row["position_bytes"] + row["value_bytes"] - row["codebook_bytes"]
    bound = mask_bound + index_bound
    # within 3 % of the order-0 bound of the mask and the index stream, plus a fixed table cost
    assert streams <= 1.03 * bound + 96, (streams, bound)
    assert report.stream_bytes <= 1.03 * report.shannon_bound_bytes + 96
    assert report.shannon_bound_bytes <= report.stream_bytes  # a bound is a bound
    assert report.encoded_bytes < 0.25 * 4 * w.numel()


def test_structured_mask_uses_gap_coding_and_beats_the_bitmap(tmp_path):
    w = torch.randn(256, 512)
    w[::2] = 0  # every other output channel removed
    w[:, 100:400] = 0
    model = nn.Sequential(nn.Linear(512, 256, bias=False))
    with torch.no_grad():
        model[0].weight.copy_(w)
    q = quantize_model(model, 3)
    report = pack(q.model, tmp_path / "st.nrz")
    (row,) = report.tensors
    assert row["position_kind"] == "gaps-ans"
    assert row["position_bytes"] < w.numel() / 8 / 4
    assert torch.equal(unpack_state_dict(tmp_path / "st.nrz")["0.weight"], q.model[0].weight)


def test_negative_zeros_are_canonical_and_outputs_equal(tmp_path):
    model = nn.Sequential(nn.Linear(64, 32))
    with torch.no_grad():
        model[0].weight.mul_((torch.rand(32, 64) < 0.3).float())  # -w * 0 leaves -0.0
    assert bool(torch.signbit(model[0].weight[model[0].weight == 0]).any())
    pack(model, tmp_path / "z.nrz")
    state = unpack_state_dict(tmp_path / "z.nrz")
    rebuilt = nn.Sequential(nn.Linear(64, 32))
    rebuilt.load_state_dict(state)
    x = torch.randn(8, 64)
    assert torch.equal(rebuilt(x), model(x))


def test_verify_reports_and_detects_damage(tmp_path):
    model = _prune(nn.Sequential(nn.Linear(100, 50)), 0.1)
    pack(model, tmp_path / "v.nrz", bits=4)
    info = verify(tmp_path / "v.nrz")
    assert info == {"version": 2, "tensors": 2, "bytes": (tmp_path / "v.nrz").stat().st_size}
    data = bytearray((tmp_path / "v.nrz").read_bytes())
    data[-40] ^= 0x10
    (tmp_path / "bad.nrz").write_bytes(bytes(data))
    with pytest.raises(FormatError, match="checksum"):
        verify(tmp_path / "bad.nrz")
    with pytest.raises(FormatError, match="does not exist"):
        verify(tmp_path / "missing.nrz")


def test_spec_is_plain_json_in_the_file(tmp_path):
    models = importlib.import_module("netrazor.models")
    model = models.build_model("lenet300")
    pack(model, tmp_path / "j.nrz", bits=8)
    data = (tmp_path / "j.nrz").read_bytes()
    spec_len = int.from_bytes(data[16:20], "little")
    raw = data[28 : 28 + spec_len]
    flags = int.from_bytes(data[6:8], "little")
    from netrazor.codec.spec_dictionary import SPEC_DICTIONARY

    # what docs/nrz-format.md promises: zlib (bit 0), with the documented preset dictionary (bit 1)
    inflate = zlib.decompressobj(zdict=SPEC_DICTIONARY) if flags & 2 else zlib.decompressobj()
    spec = json.loads(inflate.decompress(raw) if flags & 1 else raw)
    assert spec["format"] == "netrazor.nrz" and spec["model"]["name"] == "lenet300"


def test_models_changed_by_surgery_round_trip_through_their_architecture(tmp_path):
    surgery = importlib.import_module("netrazor.surgery")
    models = importlib.import_module("netrazor.models")
    torch.manual_seed(0)
    model = models.build_model("lenet5")
    x = torch.randn(4, 1, 28, 28)
    small = surgery.remove_channels(model, {"conv1": [0, 3, 5], "fc1": list(range(0, 500, 3))}, x)
    q = quantize_model(_prune(small, 0.3), 3)
    pack(q.model, tmp_path / "small.nrz")
    header, _ = read_nrz(tmp_path / "small.nrz")
    assert header["model"] is None and header["architecture"]["kind"] == "zoo"
    restored = unpack(tmp_path / "small.nrz")
    assert restored.conv1.out_channels == 17
    assert torch.equal(restored(x), q.model.eval()(x))


def test_hostile_architecture_spec_is_refused_without_building_it(tmp_path):
    """A zoo spec asking for a huge width must not allocate: it is built on the meta device first."""
    models = importlib.import_module("netrazor.models")
    from netrazor.codec import encode_file

    model = models.build_model("lenet300")
    spec = models.model_spec(model)
    spec["kwargs"]["width_mult"] = 2000.0  # ~940 MB of float32 if it were really built
    data, _, _ = encode_file({"format": "netrazor.nrz", "model": spec}, model.state_dict())
    (tmp_path / "hostile.nrz").write_bytes(data)
    tracemalloc.start()
    try:
        with pytest.raises(ModelError, match="do not fit"):
            unpack(tmp_path / "hostile.nrz")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 64 << 20


def test_dense_stage_of_a_shrunk_zoo_model_is_the_unpruned_architecture(tmp_path):
    surgery = importlib.import_module("netrazor.surgery")
    models = importlib.import_module("netrazor.models")
    model = models.build_model("lenet300")
    small = surgery.remove_channels(model, {"fc1": list(range(200))}, torch.randn(2, 1, 28, 28))
    report = pack(small, tmp_path / "s.nrz")
    assert report.dense_source == "zoo architecture before surgery"
    assert report.dense_bytes == sum(p.numel() * 4 for p in model.state_dict().values())
    assert report.removal_bytes == sum(p.numel() * 4 for p in small.state_dict().values())
    assert pack(small, tmp_path / "r.nrz", dense_reference=1000).dense_bytes == 1000


def test_quantised_bias_is_coded_through_a_codebook_and_round_trips_exactly(tmp_path):
    torch.manual_seed(0)
    model = _prune(nn.Sequential(nn.Flatten(), nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10)), 0.2)
    q = quantize_model(model, 3, bias_bits=3)
    plain = quantize_model(model, 3)
    report = pack(q.model, tmp_path / "q.nrz")
    rows = {r["name"]: r for r in report.tensors}
    assert rows["1.bias"]["kind"] == "sparse" and rows["1.bias"]["value_kind"] == "codebook16-ans"  # k-means levels are float16 values
    assert rows["1.bias"]["section_bytes"] < 200 * 4 / 2  # 3-bit indices + 8 levels, not 800 raw bytes
    assert rows["3.bias"]["kind"] == "raw"  # 10 elements: headers would cost more than the floats
    assert report.encoded_bytes < pack(plain.model, tmp_path / "p.nrz").encoded_bytes
    state = unpack_state_dict(tmp_path / "q.nrz")
    for k, v in q.model.state_dict().items():
        assert torch.equal(_bits(state[k]), _bits(v)), k
    x = torch.randn(16, 1, 8, 8)
    back = nn.Sequential(nn.Flatten(), nn.Linear(64, 200), nn.ReLU(), nn.Linear(200, 10))
    back.load_state_dict(state)
    assert torch.equal(back(x), q.model(x))


# A file written by the version-1 writer (netrazor commit 345bc79, `pack` of _v1_model()):
# version-2 readers must keep reading it bit for bit.
V1_FILE = (
    "TlJaMQEAAQCmAgAAAAAAADUBAAAEAAAA4yKHZ3jajZNNbsJADIXv4nWoSIRYcAZWlbpCFXITA6MOk9TxtALE3fsmgIiK1GGV+Nl+n+fvRKz1zpnUFlVocaJNq3s2W"
    "lAQUz62OumjbkUPk33biKeCtsrdLpWymfb4OReEXPSSApoOKd0OwYdjfE2jFOTCeiOcOJCqWUFttJFSzuFjhw5T0NIFYSUI5djNhc5zjYIN+17u5a+yfEvF1VPocv4XPX"
    "skQwlYL5Kru6XFzqNo9Y7s589NbVxtaRdSC++TCeaEf4m9ajuEw9C71jeikAx9YrcqjP3ofxrYI6Nzjrie3mA1e7++HMcYNv0fhP48o8wwygzjmXVUGUaVYVR5Bs4"
    "+bfyVc40uXS40kC4XvKBv0d61ATcGuYd38RL0SMPNx6tYhOh9QV+Rg7mebWhL2vkXQPkgMyenItFzAAAACDAud2VpZ2h0AQIQGAFCBAhNCNMGAJJJAInnAgAAkkkEY"
    "UyhfsARluLVugE7DHYfAAEBBgAAQL8AAAC/AACAvgAAgD4AAAA/AABAP0IGqlWqVatVq1WrVatVBgDQsktDLa4dLHu8pe/eB8p34yFuFNgtSNinUIFLAAAABjAuYmlh"
    "cwEBEAAAAIC/3t1dv7y7O7+ZmRm/7u7uvqqqqr7KzEy+goiIvYKIiD3KzEw+qqqqPu7u7j6ZmRk/vLs7P97dXT8AAIA/XqX43TgAAAAIMi53ZWlnaHQBAgQQASsCbdu"
    "2bdu2bdsBAQIAAAC/AAAAPysC+oUChvoBAxBu3rMODH4oAQAAAEybYSQbAAAABjIuYmlhcwEBBAAAAAA/AACAvgAAAAAAAIA/HbSMiKQVgc6gaLRR4BWRRU5ZyT41iLp"
    "+Rs6zkgoO2OHJm/zZ"
)


def _v1_model() -> nn.Module:
    m = nn.Sequential(nn.Linear(24, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        w = torch.arange(24 * 16, dtype=torch.float32).reshape(16, 24)
        m[0].weight.copy_(torch.where(w % 5 == 0, (w % 7 - 3) * 0.25, torch.zeros(())))
        m[0].bias.copy_(torch.linspace(-1, 1, 16))
        m[2].weight.copy_(((torch.arange(64, dtype=torch.float32).reshape(4, 16) % 3) - 1) * 0.5)
        m[2].bias.copy_(torch.tensor([0.5, -0.25, 0.0, 1.0]))
    return m


def test_version_1_files_still_read_bit_for_bit(tmp_path):
    import base64

    path = tmp_path / "v1.nrz"
    path.write_bytes(base64.b64decode(V1_FILE))
    assert verify(path)["version"] == 1
    state = unpack_state_dict(path)
    for k, v in _v1_model().state_dict().items():
        assert torch.equal(_bits(state[k]), _bits(v)), k
    # what this netrazor writes for the same model is version 2 and decodes to the same tensors
    pack(_v1_model(), tmp_path / "v2.nrz")
    assert verify(tmp_path / "v2.nrz")["version"] == 2
    assert all(torch.equal(_bits(unpack_state_dict(tmp_path / "v2.nrz")[k]), _bits(v)) for k, v in state.items())


def test_version_1_file_with_a_version_2_section_kind_is_refused(tmp_path):
    from netrazor.codec.binary import Reader
    from netrazor.codec.tensors import decode_tensor, encode_tensor

    body, facts = encode_tensor("idx", torch.tensor([1, 4, 5, 9, 30], dtype=torch.int64))
    assert facts.kind == "index-set"
    name, back = decode_tensor(Reader(body), [1 << 20], version=2)
    assert name == "idx" and torch.equal(back, torch.tensor([1, 4, 5, 9, 30]))
    with pytest.raises(FormatError, match="version 1"):
        decode_tensor(Reader(body), [1 << 20], version=1)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int16, torch.uint8])
def test_sorted_index_vectors_use_index_set_coding_and_round_trip(tmp_path, dtype):
    g = torch.Generator().manual_seed(0)
    kept = torch.sort(torch.randperm(200, generator=g)[:70])[0].to(dtype)  # e.g. kept input pixels
    state = {
        "fc.input_index": kept,
        "unsorted": torch.tensor([5, 3, 9, 1] * 8, dtype=dtype),  # not a set: stays raw
        "negative": torch.arange(-3, 40, dtype=torch.int64),
    }
    from netrazor.codec.container import decode_file, encode_file

    data, facts, _ = encode_file({"format": "netrazor.nrz", "model": None, "architecture": None, "quantisation": None}, state)
    kinds = {f.name: f.kind for f in facts}
    assert kinds == {"fc.input_index": "index-set", "unsorted": "raw", "negative": "raw"}
    sizes = {f.name: f.section_bytes for f in facts}
    # at most a 200-bit bitmap + the section header (name, dtype, shape, kind, universe), not 70 raw ints
    assert sizes["fc.input_index"] <= 25 + len("fc.input_index") + 8 < 70 * kept.element_size()
    _, back = decode_file(data)
    for k, v in state.items():
        assert back[k].dtype == v.dtype and torch.equal(back[k], v), k


def test_hostile_index_universe_is_refused_before_allocating():
    from netrazor.codec.binary import Reader, Writer
    from netrazor.codec.tensors import INDEX_SET, decode_tensor

    w = Writer()
    w.varint(3)
    w.raw(b"idx")
    w.u8(5)  # int64
    w.u8(1)
    w.varint(4)
    w.u8(INDEX_SET)
    w.varint(1 << 39)  # a universe of 2^39 elements for 4 values
    w.u8(0)
    with pytest.raises(FormatError, match="universe"):
        decode_tensor(Reader(w.getvalue()), [1 << 20])


def test_spec_uses_the_preset_dictionary_when_smaller(tmp_path):
    from netrazor.codec.container import FLAG_SPEC_ZDICT, HEADER

    zoo = importlib.import_module("netrazor.models")
    model = zoo.build_model("lenet5")
    path = tmp_path / "l5.nrz"
    report = pack(quantize_model(_prune(model, 0.02), 2).model, path)
    flags = HEADER.unpack_from(path.read_bytes(), 0)[2]
    assert flags & FLAG_SPEC_ZDICT
    assert report.overhead["spec"] < 120  # plain zlib of the same spec: ~150 bytes
    spec, _ = read_nrz(path)
    assert spec["model"] == zoo.model_spec(model)


def test_float16_codebooks_only_when_exact_and_bit_exact_back(tmp_path):
    torch.manual_seed(0)
    model = _prune(nn.Sequential(nn.Linear(300, 100, bias=False)), 0.3)
    fp16 = quantize_model(model, 4).model  # k-means levels rounded to float16 values
    from netrazor.quant import quantize_kmeans

    fp32 = nn.Sequential(nn.Linear(300, 100, bias=False))
    with torch.no_grad():
        fp32[0].weight.copy_(quantize_kmeans(model[0].weight, 4, level_dtype="float32").dequantized)
    small, big = pack(fp16, tmp_path / "h.nrz"), pack(fp32, tmp_path / "f.nrz")
    assert small.tensors[0]["value_kind"] == "codebook16-ans" and small.tensors[0]["codebook_bytes"] == 16 * 2
    assert big.tensors[0]["value_kind"] == "codebook-ans" and big.tensors[0]["codebook_bytes"] == 16 * 4
    for m, path in ((fp16, "h.nrz"), (fp32, "f.nrz")):
        back = unpack_state_dict(tmp_path / path)["0.weight"]
        assert torch.equal(_bits(back), _bits(m[0].weight.detach()))
