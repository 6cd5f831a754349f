"""Encode/decode speed and ratio of the .nrz codec against zstd, in one run.

Model: LeNet-5-Caffe (431k parameters; LeNet-300-100 with --model lenet300) with random weights,
95 % of each weight tensor zeroed at random (unstructured), then k-means quantised to 4 bits —
speed does not depend on the weights being trained. The same quantised tensors go to:

- ``nrz``: ``netrazor.codec.encode_file`` / ``decode_file`` (in memory, no disk);
- ``zstd-f32``: zstd on the raw float32 bytes of the quantised state dict (levels 3 and 19);
- ``zstd-u8idx``: zstd on a fairer input, one byte per weight (0 = pruned, 1 + codebook index)
  plus the float32 codebooks and the other tensors raw.

Speed is MB (10^6 bytes) of dense float32 weights per second (the state dict's float32 size over the
wall time), median of ``--repeats`` runs. Writes one JSON record under
``benchmarks/results/codec-speed/`` (DESIGN.md keys, the rest in ``extra``).

    OMP_NUM_THREADS=1 .venv/bin/python -m benchmarks.codec_bench [--model lenet5] [--seed 0]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def _median_seconds(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def _u8_index_bytes(state: dict[str, torch.Tensor], layers: dict) -> bytes:
    parts = []
    for name, t in state.items():
        layer = name[: -len(".weight")] if name.endswith(".weight") else None
        if layer in layers:
            q = layers[layer]
            parts.append((q.indices + 1).to(torch.uint8).numpy().tobytes())
            parts.append(q.codebook.numpy().astype("<f4").tobytes())
        else:
            parts.append(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return b"".join(parts)


def main(argv: list[str] | None = None) -> dict:
    import zstandard

    from netrazor.codec import decode_file, encode_file
    from netrazor.models import build_model
    from netrazor.pipeline.records import make_record, write_record
    from netrazor.quant import quantize_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="lenet5")
    ap.add_argument("--density", type=float, default=0.05)
    ap.add_argument("--bits", type=int, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--results", default="benchmarks/results")
    args = ap.parse_args(argv)

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
    dense = sum(v.numel() * 4 for v in state.values() if torch.is_floating_point(v))
    mb = dense / 1e6
    spec = {"format": "netrazor.nrz", "model": None}

    enc_s, (data, _facts, _) = _median_seconds(lambda: encode_file(spec, state), args.repeats)
    dec_s, (_, decoded) = _median_seconds(lambda: decode_file(data), args.repeats)
    assert all(torch.equal(decoded[k], v) for k, v in state.items()), "decode is not exact"

    raw_f32 = b"".join(v.reshape(-1).view(torch.uint8).numpy().tobytes() for v in state.values())
    raw_u8 = _u8_index_bytes(state, q.layers)
    contenders = {
        "nrz": {"bytes": len(data), "encode_MBps": mb / enc_s, "decode_MBps": mb / dec_s,
                "encode_s": enc_s, "decode_s": dec_s},
    }
    for label, raw in (("zstd-f32", raw_f32), ("zstd-u8idx", raw_u8)):
        for level in (3, 19):
            cctx, dctx = zstandard.ZstdCompressor(level=level), zstandard.ZstdDecompressor()
            c_s, comp = _median_seconds(lambda: cctx.compress(raw), args.repeats)
            d_s, back = _median_seconds(lambda: dctx.decompress(comp), args.repeats)
            assert back == raw
            contenders[f"{label}-l{level}"] = {"bytes": len(comp), "input_bytes": len(raw), "encode_MBps": mb / c_s,
                                               "decode_MBps": mb / d_s, "encode_s": c_s, "decode_s": d_s}
    for c in contenders.values():
        c["ratio_vs_dense_f32"] = dense / c["bytes"]

    params = sum(v.numel() for v in state.values() if torch.is_floating_point(v))
    record = make_record(
        "codec-speed", "nrz", args.seed, args.model, "none (random weights)",
        params=params,
        params_dense=params,
        bytes=len(data),
        bytes_dense=dense,
        compress_seconds=quant_seconds + enc_s,
        extra={
            "density": args.density,
            "bits": args.bits,
            "quantisation": "kmeans, per tensor",
            "nonzero": int(sum(int((v != 0).sum()) for k, v in state.items() if k.endswith("weight"))),
            "repeats": args.repeats,
            "torch_threads": torch.get_num_threads(),
            "speed_unit": "MB (1e6 bytes) of dense float32 weights per second, median",
            "contenders": contenders,
        },
    )
    path = write_record(record, args.results, name=f"nrz-{args.model}-seed{args.seed}")
    print(f"{args.model}: {params} params, density {args.density}, {args.bits}-bit k-means; dense {dense} bytes")
    print(f"{'codec':18} {'bytes':>9} {'ratio':>8} {'enc MB/s':>9} {'dec MB/s':>9}")
    for name, c in contenders.items():
        print(f"{name:18} {c['bytes']:9d} {c['ratio_vs_dense_f32']:8.1f} {c['encode_MBps']:9.1f} {c['decode_MBps']:9.1f}")
    print(f"record: {path}")
    return record


if __name__ == "__main__":
    main()
