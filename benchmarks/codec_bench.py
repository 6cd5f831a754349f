"""Encode/decode speed and ratio of the .nrz codec against zstd, in one run.

Two sources of quantised tensors:

- ``--nrz FILE``: a real pipeline output, e.g. the mnist-lenet5 recipe's artifact
  (``runs/bench-compress/compress-mnist-lenet5-seed0/stage-3-pack/model.nrz``). Its tensors are
  decoded once and re-encoded with the file's own header (the bytes must equal the file's: the
  encoder is deterministic, so this also checks that the record measures the shipped format).
- default: LeNet-5-Caffe (431k parameters; another zoo model with ``--model``) with random weights,
  ``--density`` of each weight tensor kept at random (unstructured), k-means quantised to ``--bits``
  — speed barely depends on the weights being trained, ratio does.

The same quantised tensors go to:

- ``nrz``: ``netrazor.codec.encode_file`` / ``decode_file`` (in memory, no disk);
- ``zstd-f32``: zstd on the raw float32 bytes of the quantised tensors (levels 3 and 19);
- ``zstd-u8idx``: zstd on a fairer input, one byte per element of every float tensor with at most
  255 distinct non-zero values (0 = zero, 1 + its level's index) plus its float32 levels; other
  tensors raw. That is the quantised model as a generic compressor would best see it.

Speed is MB (10^6 bytes) of float32 weights per second: the float32 size of the coded tensors over
the wall time, median of ``--repeats`` runs, and over this process's CPU time (``*_cpu_MBps``: on
the shared machine the wall time of a short call is mostly other jobs' time) (``extra.dense_arch_MBps`` also gives it per MB of the
unpruned architecture, for a model shrunk by structured removal). Writes one JSON record under
``benchmarks/results/codec-speed/`` (DESIGN.md keys, the rest in ``extra``):
``nrz-<model>-seed<N>.json`` (random) or ``nrz-<label>.json`` (``--nrz``; label default: the run folder).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.codec_bench [--model lenet5] [--seed 0]
    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.codec_bench --nrz runs/bench-compress/compress-mnist-lenet5-seed0/stage-3-pack/model.nrz
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch


def _median_seconds(fn, repeats: int) -> tuple[float, float, object]:
    """``(median wall seconds, median CPU seconds of this process, last result)`` of ``fn()``.

    Both are kept: on a shared machine the wall time measures the load as much as the code (the
    CPU time of a single-threaded call does not)."""
    walls, cpus, out = [], [], None
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        walls.append(time.perf_counter() - t)
        cpus.append(time.process_time() - c)
    return statistics.median(walls), statistics.median(cpus), out


def _raw(t: torch.Tensor) -> bytes:
    return t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()


def u8_index_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """The tensors with every few-level float tensor as one byte per element (0 = zero, else 1 +
    index into its sorted non-zero levels) followed by its levels as float32; the rest raw."""
    parts = []
    for t in state.values():
        flat = t.reshape(-1)
        if torch.is_floating_point(t) and flat.numel():
            levels = torch.unique(flat[flat != 0])
            if levels.numel() <= 255:
                idx = torch.zeros(flat.shape, dtype=torch.uint8)
                nz = flat != 0
                idx[nz] = (torch.searchsorted(levels, flat[nz]) + 1).to(torch.uint8)
                parts += [idx.numpy().tobytes(), levels.to(torch.float32).numpy().astype("<f4").tobytes()]
                continue
        parts.append(_raw(t))
    return b"".join(parts)


def _random_source(args) -> tuple[dict, dict[str, torch.Tensor], dict]:
    from netrazor.models import build_model
    from netrazor.quant import quantize_model

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    model = build_model(args.model)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_((torch.rand(p.shape, generator=g) < args.density).float())
    t0 = time.perf_counter()
    q = quantize_model(model, args.bits, method="kmeans")
    quant_seconds = time.perf_counter() - t0
    state = {k: v.detach().contiguous() for k, v in q.model.state_dict().items()}
    info = {"source": "random weights", "model": args.model, "data": "none (random weights)", "density": args.density,
            "bits": args.bits, "quantisation": "kmeans, per tensor", "quant_seconds": quant_seconds,
            "name": f"nrz-{args.model}-seed{args.seed}", "file_bytes": None}
    return {"format": "netrazor.nrz", "model": None}, state, info


def _dense_architecture_bytes(header: dict) -> int | None:
    """float32 bytes of the unpruned zoo architecture the file's header names (built on meta), or None."""
    from netrazor.models import model_from_spec

    spec = header.get("model")
    arch = header.get("architecture")
    if spec is None and isinstance(arch, dict) and arch.get("kind") == "zoo":
        spec = arch.get("spec")
    if not isinstance(spec, dict):
        return None
    with torch.device("meta"):
        model = model_from_spec(spec)
    return sum(t.numel() * 4 for t in model.state_dict().values() if torch.is_floating_point(t))


def _nrz_source(args) -> tuple[dict, dict[str, torch.Tensor], dict]:
    from netrazor.codec import read_nrz

    path = Path(args.nrz)
    header, state = read_nrz(path)
    quant = header.get("quantisation") or {}
    label = args.label or path.parent.parent.name  # runs/.../compress-<recipe>-seed<N>/stage-3-pack/model.nrz
    spec = header.get("model") or (header.get("architecture") or {}).get("spec") or {}
    info = {"source": str(path), "model": spec.get("name", "unknown") if isinstance(spec, dict) else "unknown",
            "data": args.data, "bits": quant.get("bits"), "bias_bits": quant.get("bias_bits"),
            "quantisation": quant.get("method"), "name": f"nrz-{label}", "file_bytes": path.stat().st_size,
            "dense_arch_bytes": _dense_architecture_bytes(header)}
    return header, state, info


def main(argv: list[str] | None = None) -> dict:
    import zstandard

    from netrazor.codec import decode_file, encode_file
    from netrazor.pipeline.records import make_record, write_record

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nrz", help="an .nrz file (a real pipeline output) instead of random weights")
    ap.add_argument("--label", help="--nrz: record name nrz-<label> (default: the run folder's name)")
    ap.add_argument("--data", default="mnist", help="--nrz: the data set the model was trained on (for the record)")
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)

    spec, state, info = _nrz_source(args) if args.nrz else _random_source(args)
    f32 = sum(v.numel() * 4 for v in state.values() if torch.is_floating_point(v))
    mb = f32 / 1e6

    enc_s, enc_cpu, (data, _facts, _) = _median_seconds(lambda: encode_file(spec, state), args.repeats)
    dec_s, dec_cpu, (_, decoded) = _median_seconds(lambda: decode_file(data), args.repeats)
    assert all(torch.equal(decoded[k], v) for k, v in state.items()), "decode is not exact"
    if info["file_bytes"] is not None:
        assert len(data) == info["file_bytes"], f"re-encoding gave {len(data)} bytes, the file has {info['file_bytes']}"

    raw_f32 = b"".join(_raw(v) for v in state.values())
    raw_u8 = u8_index_bytes(state)
    contenders = {
        "nrz": {"bytes": len(data), "input_bytes": len(raw_f32), "encode_s": enc_s, "decode_s": dec_s,
                "encode_cpu_s": enc_cpu, "decode_cpu_s": dec_cpu},
    }
    for label, raw in (("zstd-f32", raw_f32), ("zstd-u8idx", raw_u8)):
        for level in (3, 19):
            cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
            c_s, c_cpu, comp = _median_seconds(lambda: cctx.compress(raw), args.repeats)
            d_s, d_cpu, back = _median_seconds(lambda: dctx.decompress(comp), args.repeats)
            assert back == raw
            contenders[f"{label}-l{level}"] = {"bytes": len(comp), "input_bytes": len(raw), "encode_s": c_s,
                                               "decode_s": d_s, "encode_cpu_s": c_cpu, "decode_cpu_s": d_cpu}
    dense_arch = info.get("dense_arch_bytes")
    for c in contenders.values():
        for way in ("encode", "decode"):
            c[f"{way}_MBps"] = mb / c[f"{way}_s"]
            # a call shorter than the CPU clock's tick reads 0: no CPU speed then
            c[f"{way}_cpu_MBps"] = mb / c[f"{way}_cpu_s"] if c[f"{way}_cpu_s"] > 0 else None
        c["ratio_vs_f32"] = f32 / c["bytes"]
        if dense_arch:
            c["ratio_vs_dense_arch_f32"] = dense_arch / c["bytes"]
            c["dense_arch_encode_MBps"] = dense_arch / 1e6 / c["encode_s"]
            c["dense_arch_decode_MBps"] = dense_arch / 1e6 / c["decode_s"]

    params = sum(v.numel() for v in state.values() if torch.is_floating_point(v))
    record = make_record(
        "codec-speed", "nrz", args.seed, info["model"], info["data"],
        params=params,
        params_dense=params if not dense_arch else dense_arch // 4,
        bytes=len(data),
        bytes_dense=dense_arch or f32,
        compress_seconds=info.get("quant_seconds", 0.0) + enc_s,
        extra={
            **{k: v for k, v in info.items() if k not in ("model", "data", "name")},
            "float32_bytes": f32,
            "nonzero": int(sum(int((v != 0).sum()) for v in state.values() if torch.is_floating_point(v))),
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "speed_unit": "MB (1e6 bytes) of the coded tensors' float32 size per second, median of repeats; "
                          "*_MBps from wall time, *_cpu_MBps from this process's CPU time (the machine is shared)",
            "contenders": contenders,
        },
    )
    path = write_record(record, args.results, name=info["name"])
    print(f"{info['source']}: {params} float values ({f32} float32 bytes), {record['extra']['nonzero']} non-zero")
    def cpu(v):
        return f"{v:9.2f}" if v is not None else f"{'—':>9}"

    print(f"{'codec':16} {'bytes':>9} {'ratio':>8} {'enc MB/s':>9} {'dec MB/s':>9} {'enc cpu':>9} {'dec cpu':>9}")
    for name, c in contenders.items():
        print(f"{name:16} {c['bytes']:9d} {c['ratio_vs_f32']:8.1f} {c['encode_MBps']:9.2f} {c['decode_MBps']:9.2f} "
              f"{cpu(c['encode_cpu_MBps'])} {cpu(c['decode_cpu_MBps'])}")
    print(f"record: {path}")
    return record


if __name__ == "__main__":
    main()
