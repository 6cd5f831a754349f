"""pack / unpack: a model ⇄ an .nrz file, with an honest account of the bytes at every stage.

Stages reported by :class:`PackReport` (all in bytes; docs/nrz-format.md "Report"):

1. ``dense``: float32 bytes of every floating tensor of the state dict (other dtypes at their
   own size) — of ``dense_reference`` when given, else of the zoo architecture before surgery
   for a zoo model shrunk by surgery, else of the packed model (``dense_source`` says which).
2. ``removal``: the packed model with its zeros removed: survivors as float32 plus their
   positions as a raw bitmap or 32-bit indices, whichever is smaller (structured removal
   already shows as fewer parameters).
3. ``quantised``: survivors as ``ceil(log2 levels)``-bit indices plus float32 codebooks,
   positions as in 2.
4. ``encoded``: the .nrz file's size (positions and indices entropy-coded, headers, checksums).

The Shannon bound is the empirical (order-0) entropy × count of each symbol stream the file
codes (positions and indices), summed; ``stream_bytes`` is what those streams take encoded.
"""

from __future__ import annotations

import logging
import math
import os
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from netrazor.codec.container import MAX_RATIO, decode_file, encode_file, verify_bytes
from netrazor.codec.tensors import SectionFacts
from netrazor.errors import FormatError, ModelError
from netrazor.io import atomic_write_bytes
from netrazor.surgery import load_model as surgery_load
from netrazor.surgery import save_model as surgery_save

log = logging.getLogger(__name__)

FORMAT_NAME = "netrazor.nrz"
STORED_QUANT_KEYS = ("method", "per_channel", "bits", "bias_bits")


@dataclass
class PackReport:
    """Bytes at every stage of one ``pack`` (see module docstring); ``model`` is what was packed."""

    path: str
    dense_bytes: int
    removal_bytes: int
    quantized_bytes: int
    encoded_bytes: int
    shannon_bound_bytes: float
    stream_bytes: int
    params: int
    nonzero: int
    tensors: list[dict] = field(default_factory=list)
    overhead: dict = field(default_factory=dict)
    bits: dict = field(default_factory=dict)
    dense_source: str = "packed model"
    model: nn.Module | None = field(default=None, repr=False)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.encoded_bytes if self.encoded_bytes else float("inf")

    def stages(self) -> list[tuple[str, int]]:
        return [
            ("dense float32", self.dense_bytes),
            ("after removal", self.removal_bytes),
            ("after quantisation", self.quantized_bytes),
            ("encoded (.nrz)", self.encoded_bytes),
        ]

    def summary_line(self) -> str:
        """The one honest line (NNCodec style)."""
        return f"compressed from {self.dense_bytes} bytes to {self.encoded_bytes} bytes ({self.ratio:.1f}×)"

    def to_dict(self) -> dict:
        import copy
        from dataclasses import fields

        d = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "model"}
        d["ratio"] = self.ratio
        d["stages"] = dict(self.stages())
        return d


def _positions_raw_bytes(numel: int, nnz: int) -> int:
    return min((numel + 7) // 8, 4 * nnz)


def _dense_bytes(state: Mapping[str, torch.Tensor]) -> int:
    return sum(t.numel() * 4 if torch.is_floating_point(t) else t.numel() * t.element_size() for t in state.values())


def _stage_bytes(f: SectionFacts, t: torch.Tensor) -> tuple[int, int, int]:
    dense = f.numel * 4 if torch.is_floating_point(t) else f.numel * t.element_size()
    if f.kind != "sparse":
        return dense, dense, dense
    pos = _positions_raw_bytes(f.numel, f.nnz) if f.nnz < f.numel else 0
    removal = 4 * f.nnz + pos
    if f.value_kind in ("codebook-ans", "codebook16-ans") and f.levels:
        index_bits = max(1, math.ceil(math.log2(f.levels))) if f.levels > 1 else 0
        quant = math.ceil(f.nnz * index_bits / 8) + f.codebook_bytes + pos
    else:
        quant = removal
    return dense, removal, quant


def _canonical_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """State dict on CPU with -0.0 turned into +0.0 (the codec's zero is +0.0; outputs are equal)."""
    out = {}
    for k, v in model.state_dict().items():
        v = v.detach().cpu()
        if torch.is_floating_point(v):
            v = torch.where(v == 0, torch.zeros((), dtype=v.dtype), v)
        out[k] = v
    return out


def _architecture(model: nn.Module, spec: dict | None) -> tuple[dict | None, dict | None]:
    """``(zoo spec, surgery architecture)`` describing ``model``; both None = state dict only.

    A plain zoo model is stored as its zoo spec. A model changed by surgery (re-shaped layers,
    swapped activations, folded graphs) is stored as the JSON architecture header that
    ``netrazor.surgery.save_model`` writes (kinds "zoo" with ``changed`` layers, or "graph");
    the "export" kind (a torch.export archive, which can hold pickles) is never embedded.
    """
    if spec is not None:
        return spec, None
    import tempfile

    from netrazor.errors import NetrazorError
    from netrazor.io import read_json

    with tempfile.TemporaryDirectory(prefix="nrz-arch-") as tmp:
        try:
            header = surgery_save(model, Path(tmp) / "m")
        except NetrazorError as exc:
            log.info("no architecture as data for %s (%s): packing its state dict only", type(model).__name__, exc)
            return None, None
        header = read_json(Path(tmp) / "m.json") if header is None else header
    kind = header.get("kind")
    if kind == "zoo" and not header.get("changed"):
        return header["spec"], None
    if kind in ("zoo", "graph"):
        # tensor shapes are in the sections already; unpack restores the field for the loader
        return None, {k: v for k, v in header.items() if k not in ("extra", "tensors")}
    log.info("%s can only be saved through torch.export: packing its state dict only", type(model).__name__)
    return None, None


def pack(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    bits: int | Mapping[str, int] | None = None,
    method: str = "kmeans",
    per_channel: bool = False,
    spec: dict | None = None,
    quantisation: dict | None = None,
    dense_reference: nn.Module | int | None = None,
) -> PackReport:
    """Write ``model`` to ``path`` as .nrz and report the bytes at every stage.

    ``bits``: ``None`` packs the weights as they are (a model already quantised — e.g.
    ``QuantResult.model`` — is coded losslessly through its codebooks); an int or
    ``{layer: bits}`` quantises a copy first with ``method`` ("kmeans" | "uniform").
    ``spec``: architecture spec (default: the zoo spec of ``model`` when it has one).
    ``quantisation``: ``QuantResult.to_dict()``; its method, per_channel and bits are stored in the file.
    ``dense_reference``: the model (or its parameter count) before structured removal, for stage 1.
    """
    packed = model
    if bits is not None:
        from netrazor.quant import quantize_model

        result = quantize_model(model, bits, method=method, per_channel=per_channel)
        packed = result.model
        quantisation = quantisation or result.to_dict()
    state = _canonical_state(packed)
    zoo_spec, architecture = _architecture(model, spec)
    header: dict[str, Any] = {
        "format": FORMAT_NAME,
        "model": zoo_spec,
        "architecture": architecture,
        # only what describes the file: codebooks already live in the sections, search curves in the run record
        "quantisation": _json_safe({k: quantisation[k] for k in STORED_QUANT_KEYS if k in quantisation}) if quantisation else None,
    }
    data, facts, overhead = encode_file(header, state)
    atomic_write_bytes(path, data)

    rows, dense, removal, quant = [], 0, 0, 0
    bound_bits, stream = 0.0, 0
    for f in facts:
        d, rm, q = _stage_bytes(f, state[f.name])
        dense, removal, quant = dense + d, removal + rm, quant + q
        if f.kind in ("sparse", "index-set"):  # the sections that code symbol streams
            bound_bits += f.position_bound_bits + f.index_bound_bits
            stream += f.position_bytes + (f.value_bytes - f.codebook_bytes if f.value_kind in ("codebook-ans", "codebook16-ans") else 0)
        row = asdict(f)
        row.update(dense_bytes=d, removal_bytes=rm, quantized_bytes=q)
        rows.append(row)
    dense_source = "packed model"
    if dense_reference is not None:
        dense = dense_reference if isinstance(dense_reference, int) else _dense_bytes(dense_reference.state_dict())
        dense_source = "dense_reference"
    elif architecture is not None and architecture.get("kind") == "zoo" and isinstance(architecture.get("spec"), dict):
        # a zoo model shrunk by surgery: "dense" is the zoo architecture before removal (built on meta: no memory)
        from netrazor.models import model_from_spec

        with torch.device("meta"):
            dense = _dense_bytes(model_from_spec(architecture["spec"]).state_dict())
        dense_source = "zoo architecture before surgery"
    report = PackReport(
        path=str(path),
        dense_bytes=int(dense),
        removal_bytes=int(removal),
        quantized_bytes=int(quant),
        encoded_bytes=len(data),
        shannon_bound_bytes=bound_bits / 8,
        stream_bytes=int(stream),
        params=sum(f.numel for f in facts),
        nonzero=sum(f.nnz for f in facts),
        tensors=rows,
        overhead=overhead,
        bits=dict((quantisation or {}).get("bits", {}) or {}),
        dense_source=dense_source,
        model=packed,
    )
    log.info("%s: %s", path, report.summary_line())
    return report


def _json_safe(obj: Any) -> Any:
    """Drop what JSON cannot hold (tensors become lists; NaN/inf become None)."""
    if obj is None:
        return None
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, torch.Tensor):
        return _json_safe(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, (str, int, bool)):
        return obj
    return str(obj)


def _read(path: str | os.PathLike) -> bytes:
    path = Path(path)
    if not path.is_file():
        raise FormatError(f"{path} does not exist or is not a file; check the path.")
    return path.read_bytes()


def read_nrz(path: str | os.PathLike, max_ratio: int = MAX_RATIO) -> tuple[dict, dict[str, torch.Tensor]]:
    """``(header spec, {name: tensor})`` of an .nrz file. Any damage raises ``FormatError``.

    ``max_ratio``: elements the file may declare per byte of its size (the guard against hostile
    shapes); raise it only for genuine files of extreme sparsity.
    """
    data = _read(path)
    try:
        return decode_file(data, max_ratio=max_ratio)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc
    except (ValueError, TypeError, IndexError, OverflowError, MemoryError, RuntimeError) as exc:
        # defensive: the parser should have named the problem already
        raise FormatError(f"{path}: cannot decode ({type(exc).__name__}: {exc}); the file is corrupt.") from exc


def unpack_state_dict(path: str | os.PathLike, max_ratio: int = MAX_RATIO) -> dict[str, torch.Tensor]:
    """The tensors of an .nrz file (any model, zoo or not)."""
    return read_nrz(path, max_ratio)[1]


def _build(header: dict, tensors: dict[str, torch.Tensor], path, device: str) -> nn.Module:
    """The module the header describes, built on ``device`` ("meta" allocates nothing)."""
    if isinstance(header.get("model"), dict):
        from netrazor.models import model_from_spec

        with torch.device(device):
            return model_from_spec(header["model"])
    arch = header.get("architecture")
    if isinstance(arch, dict) and arch.get("kind") in ("zoo", "graph"):
        import tempfile

        from netrazor.errors import CheckpointError
        from netrazor.io import save_tensors, write_json

        with tempfile.TemporaryDirectory(prefix="nrz-arch-") as tmp:
            save_tensors(Path(tmp) / "m.safetensors", tensors)
            write_json(Path(tmp) / "m.json", {**arch, "tensors": {k: list(v.shape) for k, v in tensors.items()}})
            try:
                with torch.device(device), warnings.catch_warnings():
                    # on "meta", loading real weights into meta parameters is a (warned) no-op: fine here
                    warnings.simplefilter("ignore", UserWarning)
                    return surgery_load(Path(tmp) / "m")
            except CheckpointError as exc:
                raise ModelError(f"{path}: the stored architecture does not rebuild ({exc}); "
                                 "load the tensors with unpack_state_dict(path).") from exc
    raise ModelError(f"{path} stores no architecture spec (the model was neither a zoo model nor saveable "
                     "as data); load its tensors with netrazor.codec.unpack_state_dict(path) into your own module.")


def _check_fits(model: nn.Module, tensors: dict[str, torch.Tensor], path) -> None:
    expected = model.state_dict()
    mismatched = [k for k in expected if k in tensors and tuple(tensors[k].shape) != tuple(expected[k].shape)]
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    if mismatched or missing or unexpected:
        raise ModelError(
            f"{path}: the tensors do not fit the stored architecture (shape changes {mismatched[:3]}, "
            f"missing {missing[:3]}, unexpected {unexpected[:3]}); load them with unpack_state_dict(path)."
        )


def unpack(path: str | os.PathLike, max_ratio: int = MAX_RATIO) -> nn.Module:
    """Rebuild the model stored in ``path`` (zoo spec, or surgery's architecture), in eval mode.

    Its outputs equal those of the packed model exactly (same float32 weights bit for bit).
    The architecture is first built on the ``meta`` device (no memory) and its tensor names and
    shapes compared with the decoded ones, so a hostile spec (say, a width multiplier of 10⁴)
    cannot allocate more than the file's own tensors. A file without an architecture raises
    ``ModelError``: read it with :func:`unpack_state_dict`.
    """
    header, tensors = read_nrz(path, max_ratio)
    _check_fits(_build(header, tensors, path, "meta"), tensors, path)
    model = _build(header, tensors, path, "cpu")
    _check_fits(model, tensors, path)
    model.load_state_dict(tensors, strict=True)
    return model.eval()


def verify(path: str | os.PathLike) -> dict:
    """Check the framing and every checksum (SHA-256 of the file, CRC32 per section), decode nothing."""
    data = _read(path)
    try:
        return verify_bytes(data)
    except FormatError as exc:
        raise FormatError(f"{path}: {exc}") from exc
