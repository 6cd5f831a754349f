"""netrazor.quant: quantisers for surviving weights, per-layer bit search and allocation, QAT."""

from netrazor.quant.model import QuantResult, layer_nonzeros, quantizable_layers, quantize_model
from netrazor.quant.qat import QuantizationAwareCallback
from netrazor.quant.quantizers import Quantized, kmeans_codebook, quantize_kmeans, quantize_tensor, quantize_uniform
from netrazor.quant.search import allocate_bits, apply_bits, layer_curves, search_bits

__all__ = [
    "Quantized", "QuantResult", "QuantizationAwareCallback",
    "quantize_uniform", "quantize_kmeans", "quantize_tensor", "kmeans_codebook",
    "quantize_model", "quantizable_layers", "layer_nonzeros",
    "search_bits", "allocate_bits", "apply_bits", "layer_curves",
]
