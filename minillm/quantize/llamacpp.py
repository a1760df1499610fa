"""Run a GGUF file in llama.cpp, through ``llama-cpp-python``, beside minillm (lessons 10 and 12).

Planned home: ``minillm/quantize/llamacpp.py``. ``llama-cpp-python`` (in the ``dev`` extra) builds
llama.cpp from source with the machine's compiler the first time it is installed (about five
minutes on 2 cores). :class:`LlamaCppLM` wraps one loaded file so that it answers the calls
minillm's own checks make of a model:

- ``lm(ids)`` returns ``(logits,)`` like :class:`minillm.model.GPT`, so
  :func:`minillm.quantize.logit_agreement` scores llama.cpp against the float model exactly as
  it scores minillm's quantized models;
- :meth:`LlamaCppLM.tokenize` is llama.cpp's tokenizer reading the file's vocabulary;
- :meth:`LlamaCppLM.greedy` is llama.cpp's own sampler at temperature 0.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

__all__ = ["LlamaCppLM", "import_llama_cpp"]

_LOG_CALLBACK: Any = None  # kept alive for as long as llama.cpp may call it
_GGML_LOG_ERROR = 4  # ggml.h: NONE 0, DEBUG 1, INFO 2, WARN 3, ERROR 4, CONT 5


def import_llama_cpp() -> Any:
    """The ``llama_cpp`` module, or an ImportError naming the package to install."""
    try:
        import llama_cpp
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "running a GGUF file needs llama-cpp-python: pip install 'minillm[dev]' "
            "(or pip install llama-cpp-python; the first install compiles llama.cpp)"
        ) from err
    _quiet_logs(llama_cpp)
    return llama_cpp


def _quiet_logs(llama_cpp: Any) -> None:
    """Pass only llama.cpp's errors to stderr. Its loader prints hundreds of lines per model
    even with ``verbose=False`` (and warns that its context, padded to 256, exceeds the model's
    128), which would flood a notebook cell."""
    global _LOG_CALLBACK
    if _LOG_CALLBACK is not None:
        return

    @llama_cpp.llama_log_callback
    def errors_only(level: int, text: bytes, user_data: ctypes.c_void_p) -> None:
        if level == _GGML_LOG_ERROR:
            print(text.decode("utf-8", "replace"), end="", file=sys.stderr)

    _LOG_CALLBACK = errors_only
    llama_cpp.llama_log_set(errors_only, ctypes.c_void_p(0))


class LlamaCppLM(nn.Module):
    """A GGUF file loaded in llama.cpp, called like a minillm GPT.

    Args:
        path: the ``.gguf`` file.
        n_threads: CPU threads for llama.cpp; default: PyTorch's, so speeds compare fairly.
    """

    def __init__(self, path: str | os.PathLike[str], n_threads: int | None = None) -> None:
        super().__init__()
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no GGUF file at {path}")
        llama_cpp = import_llama_cpp()
        threads = n_threads or torch.get_num_threads()
        self.llm = llama_cpp.Llama(
            str(path),
            n_ctx=0,  # the file's context length (llama.cpp pads the allocation to 256)
            n_batch=512,
            n_threads=threads,
            n_threads_batch=threads,
            logits_all=True,  # every position's logits, to compare with minillm's
            verbose=False,
        )
        meta = self.llm.metadata
        self.n_ctx = int(meta[f"{meta['general.architecture']}.context_length"])
        self.n_vocab = self.llm.n_vocab()
        self.threads = threads

    def forward(self, idx: torch.Tensor) -> tuple[torch.Tensor]:
        """Logits (batch, time, vocab) for each row of ``idx``, each row run on its own."""
        idx = torch.as_tensor(idx)
        if idx.dim() != 2 or idx.shape[1] > self.n_ctx:
            raise ValueError(
                f"idx must be (batch, time) with time <= {self.n_ctx}, got {tuple(idx.shape)}"
            )
        rows = []
        for row in idx.tolist():
            self.llm.reset()  # a fresh sequence: the cache is rewritten from position 0
            self.llm.eval(row)
            rows.append(np.array(self.llm.scores[: len(row)], dtype=np.float32))
        return (torch.from_numpy(np.stack(rows)),)

    def tokenize(self, text: str) -> list[int]:
        """llama.cpp's ids for ``text`` (no BOS added; special-token text read as plain text)."""
        return self.llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)

    def detokenize(self, ids: list[int]) -> bytes:
        """The bytes llama.cpp writes for ``ids``."""
        return self.llm.detokenize(ids)

    def greedy(self, ids: list[int], max_new_tokens: int) -> list[int]:
        """``max_new_tokens`` tokens chosen by llama.cpp's greedy sampler after ``ids``.

        Like minillm's ``generate(..., temperature=0)``, it does not stop at an end token.
        """
        if len(ids) + max_new_tokens > self.n_ctx:
            raise ValueError(
                f"prompt ({len(ids)}) + new tokens ({max_new_tokens}) exceed the context "
                f"{self.n_ctx}"
            )
        out: list[int] = []
        if max_new_tokens <= 0:
            return out
        self.llm.reset()
        for token in self.llm.generate(ids, temp=0.0, repeat_penalty=1.0, reset=True):
            out.append(int(token))
            if len(out) == max_new_tokens:
                break
        return out

    def close(self) -> None:
        """Free llama.cpp's model and context now (not at interpreter exit)."""
        self.llm.close()
