"""benchmarks.codec_bench: speed/ratio of .nrz vs zstd on the same quantised tensors, from a real file."""

import json

import pytest
import torch

from benchmarks import codec_bench
from netrazor.codec import pack
from netrazor.models import build_model


def _packed_lenet300(tmp_path):
    torch.manual_seed(0)
    model = build_model("lenet300")
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand_like(p) < 0.05).float())
    path = tmp_path / "run-x" / "stage-3-pack" / "model.nrz"
    path.parent.mkdir(parents=True)
    pack(model, path, bits=3)
    return path


def test_u8_index_bytes_is_one_byte_per_element_plus_levels_for_few_level_tensors():
    few = torch.tensor([0.0, 0.5, -0.25, 0.5, 0.0, 1.0])  # 3 non-zero levels
    many = torch.linspace(-1, 1, 300)  # 300 distinct values: stays raw float32
    ints = torch.arange(5)
    out = codec_bench.u8_index_bytes({"few": few, "many": many, "ints": ints})
    assert len(out) == few.numel() + 3 * 4 + many.numel() * 4 + ints.numel() * 8
    assert list(out[:6]) == [0, 2, 1, 2, 0, 3]  # 0 = zero, else 1 + index of the sorted level (-0.25, 0.5, 1.0)


def test_bench_on_a_real_nrz_file_reencodes_it_byte_exactly_and_records_every_contender(tmp_path, capsys):
    path = _packed_lenet300(tmp_path)
    record = codec_bench.main(["--nrz", str(path), "--repeats", "1", "--results", str(tmp_path / "results")])
    written = tmp_path / "results" / "codec-speed" / "nrz-run-x.json"
    assert json.loads(written.read_text())["bytes"] == path.stat().st_size == record["bytes"]
    extra = record["extra"]
    assert extra["source"] == str(path) and extra["bits"] == {"fc1": 3, "fc2": 3, "fc3": 3}
    contenders = extra["contenders"]
    assert set(contenders) == {"nrz", "zstd-f32-l3", "zstd-f32-l19", "zstd-u8idx-l3", "zstd-u8idx-l19"}
    f32 = extra["float32_bytes"]
    assert f32 == 266_610 * 4  # lenet300's float tensors
    for c in contenders.values():
        assert c["encode_MBps"] == pytest.approx(f32 / 1e6 / c["encode_s"])
        assert c["ratio_vs_f32"] == pytest.approx(f32 / c["bytes"])
        assert c["encode_cpu_MBps"] is None or c["encode_cpu_MBps"] == pytest.approx(f32 / 1e6 / c["encode_cpu_s"])
    assert contenders["nrz"]["encode_cpu_s"] > 0  # a whole .nrz encode takes more than one CPU-clock tick
    # entropy-coded positions + 3-bit indices beat a generic compressor on the same tensors
    assert contenders["nrz"]["bytes"] < contenders["zstd-u8idx-l19"]["bytes"] < contenders["zstd-f32-l19"]["bytes"]
    assert "zstd-u8idx-l19" in capsys.readouterr().out
