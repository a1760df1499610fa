"""Lesson 10 (quantization): int8 and int4 weight-only quantization, packing, quantized
layers and files, and llama.cpp's GGUF blocks.

Modules: ``gguf``, ``qtensor``, ``quantized_model``.
"""

from minillm.quantize.gguf import (
    BLOCK_BYTES,
    QTYPES,
    dequantize_blocks,
    gguf_name,
    q4_0_blocks,
    q8_0_blocks,
    quantize_blocks,
    read_gguf,
    write_gguf,
)
from minillm.quantize.qtensor import (
    GGML_BLOCK,
    SCHEMES,
    QuantizedWeight,
    pack_codes,
    q4_0_rule,
    quantize_weight,
    unpack_codes,
)
from minillm.quantize.quantized_model import (
    BACKENDS,
    FORMAT,
    FORMAT_VERSION,
    Agreement,
    QuantEmbedding,
    QuantLinear,
    check_quantized_tokenizer,
    dequantize,
    is_quantized_file,
    linear_names,
    load_quantized,
    logit_agreement,
    model_size_bytes,
    quantize_model,
    quantized_fingerprint,
    save_quantized,
)

__all__ = [
    "Agreement",
    "BACKENDS",
    "BLOCK_BYTES",
    "FORMAT",
    "FORMAT_VERSION",
    "GGML_BLOCK",
    "QTYPES",
    "QuantEmbedding",
    "QuantLinear",
    "QuantizedWeight",
    "SCHEMES",
    "dequantize",
    "dequantize_blocks",
    "gguf_name",
    "check_quantized_tokenizer",
    "is_quantized_file",
    "linear_names",
    "load_quantized",
    "quantized_fingerprint",
    "logit_agreement",
    "model_size_bytes",
    "pack_codes",
    "q4_0_blocks",
    "q4_0_rule",
    "q8_0_blocks",
    "quantize_blocks",
    "quantize_model",
    "quantize_weight",
    "read_gguf",
    "save_quantized",
    "unpack_codes",
    "write_gguf",
]
