"""ONNX export with an onnxruntime parity check (the exported file must compute the same thing)."""

from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from netrazor.errors import ConfigError, SurgeryError
from netrazor.io import atomic_path

log = logging.getLogger(__name__)


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple[int, ...], *,
                rtol: float = 1e-4, batch: int = 4, seed: int = 0, opset: int = 17) -> dict:
    """Write ``model`` as ONNX (dynamic batch axis) and check it with onnxruntime.

    Uses the TorchScript-based exporter (``dynamo=False``): the dynamo exporter needs
    ``onnxscript``, which is not a netrazor dependency. Parity: ``max|torch - ort| / max|torch|``
    on a random batch must be <= ``rtol`` or :class:`SurgeryError` is raised (the file is not
    kept). Returns ``{"path", "max_abs_diff", "rel_diff", "bytes"}``.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise ConfigError("ONNX export needs onnx and onnxruntime: pip install 'netrazor[onnx]'.") from exc
    path = Path(path)
    model = model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn((batch, *input_shape), generator=gen)
    with torch.no_grad():
        expected = model(x)
    with atomic_path(path) as tmp:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (x,), str(tmp), dynamo=False, opset_version=opset,
                                  input_names=["input"], output_names=["output"],
                                  dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}})
        except Exception as exc:
            raise SurgeryError(f"ONNX export failed ({type(exc).__name__}: {exc}); the model uses an op the "
                               "exporter does not support — fold or replace it first.") from exc
        session = ort.InferenceSession(str(tmp), providers=["CPUExecutionProvider"])
        got = session.run(None, {"input": x.numpy()})[0]
        ref = expected.detach().numpy()
        max_abs = float(np.abs(got - ref).max())
        rel = max_abs / max(float(np.abs(ref).max()), 1e-12)
        if not rel <= rtol:
            raise SurgeryError(f"onnxruntime output differs from torch (max abs {max_abs:.3g}, relative {rel:.3g} > "
                               f"{rtol:g}); the ONNX file was not written — report the model's structure.")
    report = {"path": str(path), "max_abs_diff": max_abs, "rel_diff": rel, "bytes": path.stat().st_size}
    log.info("exported %s (%d bytes), onnxruntime max abs diff %.3g", path, report["bytes"], max_abs)
    return report
