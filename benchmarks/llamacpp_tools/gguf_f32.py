"""Write an unquantised (float32) copy of a GGUF file: the same metadata, tokenizer and tensor layout,
every tensor de-quantised with ``gguf.quants.dequantize``.

transformers loads a GGUF by de-quantising it with the same function (``load_dequant_gguf_tensor`` in
``transformers/integrations/ggml.py``, 5.x), so llama.cpp running the float32 copy and transformers
running the original compute with identical weights: what is left between the two engines is their
float32 arithmetic, not quantisation. Tensors keep the GGUF's own layout (llama.cpp's permuted q/k
rows included), so llama.cpp reads the copy exactly as it reads the original.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def dequantized(tensor: Any) -> np.ndarray:
    """float32 values of a ``gguf.ReaderTensor`` in numpy order (ggml shape reversed)."""
    from gguf import quants

    values = quants.dequantize(tensor.data, tensor.tensor_type)
    shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
    return np.ascontiguousarray(values, dtype=np.float32).reshape(shape)


def write_f32_gguf(src: str | Path, dst: str | Path) -> Path:
    """Write ``dst``: ``src`` with every tensor as float32 and ``general.file_type`` = ALL_F32.

    ``general.quantization_version`` is dropped (nothing is quantised); every other key is copied with
    its type. Written to a temporary name and renamed, so an interrupted run leaves no half file.
    """
    from gguf import GGUFReader, GGUFValueType, GGUFWriter, LlamaFileType

    src, dst = Path(src), Path(dst)
    reader = GGUFReader(src)
    arch = reader.fields["general.architecture"].contents()
    tmp = dst.with_name(dst.name + ".part")
    writer = GGUFWriter(tmp, arch)
    alignment = reader.fields.get("general.alignment")
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.quantization_version"):
            continue
        if key == "general.file_type":
            writer.add_uint32(key, int(LlamaFileType.ALL_F32))
            continue
        vtype = field.types[0]
        sub_type = field.types[-1] if vtype == GGUFValueType.ARRAY else None
        if vtype == GGUFValueType.ARRAY and len(field.types) > 2:
            raise ValueError(f"{key}: nested GGUF arrays are not supported")
        writer.add_key_value(key, field.contents(), vtype, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor(tensor.name, dequantized(tensor))
    dst.parent.mkdir(parents=True, exist_ok=True)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    tmp.replace(dst)
    return dst
