"""The embedding model's BERT forward pass in numpy, for one short message at a time inside the guard.

The guard embeds one message per turn, capped to its first few word pieces. Doing that with the model's own
weights (read from its safetensors file) in a dozen numpy calls per layer gives the model's unit vectors (within
cos 0.9999 of sentence-transformers, checked in the tests) without importing torch, and with BLAS pinned to
one thread: on a busy 2-core machine a second BLAS thread only spins, and stalls single calls for hundreds of ms.
Only BERT encoders with mean pooling and normalization, such as the packaged all-MiniLM-L6-v2, qualify; other
models go through the regular embedder.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path

import numpy as np


def _layer_norm(x: np.ndarray, weight: np.ndarray, bias: np.ndarray, eps: float) -> np.ndarray:
    """Layer norm over the last axis, in place (x is a fresh intermediate at every call site)."""
    x -= x.mean(axis=-1, keepdims=True)
    var = np.einsum("ij,ij->i", x, x) / np.float32(x.shape[-1])
    x *= (1.0 / np.sqrt(var + np.float32(eps)))[:, None]
    x *= weight
    x += bias
    return x


_GELU_C = np.float32(0.7978845608028654)  # sqrt(2 / pi)
_GELU_K = np.float32(0.044715)


def _gelu(x: np.ndarray) -> np.ndarray:
    """GELU in its tanh form: within 5e-4 of the exact erf form, at a quarter of the cost in numpy.

    The library and each message go through the same function, so the approximation cannot bias a comparison;
    the embeddings stay within cos 0.9999 of the model's own (checked in the tests).
    """
    inner = x * x
    inner *= _GELU_K * x
    inner += x
    inner *= _GELU_C
    np.tanh(inner, out=inner)
    inner += 1.0
    inner *= x
    inner *= np.float32(0.5)
    return inner


class NumpyBertEncoder:
    """Mean-pooled, L2-normalized BERT sentence embeddings computed with numpy."""

    def __init__(self, model_dir: Path, *, max_tokens: int | None = None):
        from safetensors.numpy import load_file
        from tokenizers import Tokenizer

        model_dir = Path(model_dir)
        config = json.loads((model_dir / "config.json").read_text())
        if config.get("model_type") != "bert" or config.get("hidden_act") != "gelu":
            raise ValueError(f"{model_dir} is not a BERT model with GELU activations")
        if config.get("position_embedding_type", "absolute") != "absolute":
            raise ValueError(f"{model_dir} uses {config['position_embedding_type']} position embeddings")
        self._check_pipeline(model_dir)
        weights_file = model_dir / "model.safetensors"
        if not weights_file.is_file():
            raise ValueError(f"{model_dir} has no model.safetensors")
        st_config_file = model_dir / "sentence_bert_config.json"
        st_config = json.loads(st_config_file.read_text()) if st_config_file.is_file() else {}
        model_max = int(st_config.get("max_seq_length") or config.get("max_position_embeddings", 512))
        self.max_tokens = min(model_max, max_tokens) if max_tokens else model_max
        self.heads = int(config["num_attention_heads"])
        self.eps = float(config.get("layer_norm_eps", 1e-12))
        w = {k.removeprefix("bert."): v for k, v in load_file(str(weights_file)).items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.emb_ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        for i in range(int(config["num_hidden_layers"])):
            p = f"encoder.layer.{i}."
            qkv_w = np.concatenate(
                [w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")], axis=0
            ).T.copy()
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            # Fold the attention's 1/sqrt(head size) into the query projection once, not into every score matrix.
            scale = np.float32(1.0 / np.sqrt(int(config["hidden_size"]) // self.heads))
            qkv_w[:, : qkv_w.shape[1] // 3] *= scale
            qkv_b[: qkv_b.shape[0] // 3] *= scale
            self.layers.append(
                (
                    qkv_w,
                    qkv_b,
                    w[p + "attention.output.dense.weight"].T.copy(),
                    w[p + "attention.output.dense.bias"],
                    (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    w[p + "intermediate.dense.weight"].T.copy(),
                    w[p + "intermediate.dense.bias"],
                    w[p + "output.dense.weight"].T.copy(),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
        self.dim = self.word.shape[1]
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(self.max_tokens)
        self.tokenizer.no_padding()
        self._blas_limit = _single_thread_blas()

    @staticmethod
    def _check_pipeline(model_dir: Path) -> None:
        modules_file = model_dir / "modules.json"
        if not modules_file.is_file():
            raise ValueError(f"{model_dir} is not a sentence-transformers directory")
        types = [m["type"].rsplit(".", 1)[-1] for m in json.loads(modules_file.read_text())]
        if types[:1] != ["Transformer"] or "Pooling" not in types or "Normalize" not in types:
            raise ValueError(f"{model_dir} pipeline {types} is not Transformer -> Pooling -> Normalize")
        pooling_dir = model_dir / next(
            m["path"] for m in json.loads(modules_file.read_text()) if m["type"].endswith("Pooling")
        )
        pooling = json.loads((pooling_dir / "config.json").read_text())
        other_modes = ("pooling_mode_cls_token", "pooling_mode_max_tokens", "pooling_mode_mean_sqrt_len_tokens")
        if not pooling.get("pooling_mode_mean_tokens") or any(pooling.get(k) for k in other_modes):
            raise ValueError(f"{model_dir} does not use plain mean pooling")

    def _forward(self, ids: np.ndarray) -> np.ndarray:
        """One unpadded sequence of token ids -> its unit-length mean-pooled embedding."""
        n = len(ids)
        x = self.word[ids] + self.position[:n] + self.token_type
        x = _layer_norm(x, *self.emb_ln, self.eps)
        d = self.dim
        hd = d // self.heads
        for qkv_w, qkv_b, o_w, o_b, ln1, i_w, i_b, f_w, f_b, ln2 in self.layers:
            qkv = x @ qkv_w
            qkv += qkv_b
            q = qkv[:, :d].reshape(n, self.heads, hd).transpose(1, 0, 2)
            k = qkv[:, d : 2 * d].reshape(n, self.heads, hd).transpose(1, 2, 0)
            v = qkv[:, 2 * d :].reshape(n, self.heads, hd).transpose(1, 0, 2)
            scores = q @ k
            scores -= scores.max(axis=-1, keepdims=True)
            np.exp(scores, out=scores)
            scores /= scores.sum(axis=-1, keepdims=True)
            context = (scores @ v).transpose(1, 0, 2).reshape(n, d)
            h = context @ o_w
            h += o_b
            h += x
            x = _layer_norm(h, *ln1, self.eps)
            h = x @ i_w
            h += i_b
            h = _gelu(h) @ f_w
            h += f_b
            h += x
            x = _layer_norm(h, *ln2, self.eps)
        pooled = x.mean(axis=0)
        return pooled / max(float(np.linalg.norm(pooled)), 1e-12)

    def encode(self, texts: list[str]) -> np.ndarray:
        """Unit-length float32 vectors, one row per text."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        with self._blas_limit():
            for i, text in enumerate(texts):
                ids = np.asarray(self.tokenizer.encode(text).ids, dtype=np.int64)
                out[i] = self._forward(ids)
        return out


def _single_thread_blas() -> Callable[[], AbstractContextManager]:
    """A context that keeps BLAS on one thread: for matrices this small, a second thread only waits, and on a busy
    CPU its spinning stalls the call for hundreds of milliseconds."""
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return nullcontext
    controller = ThreadpoolController()
    return lambda: controller.limit(limits=1, user_api="blas")
