"""TabularNet: hashed-categorical embeddings + numeric inputs -> MLP -> (prediction, hidden).

With ``wide``, a linear map of the same inputs is added to the head's output (the "wide" part
of Wide & Deep, Cheng et al. 2016): a linear concept is learned as fast as by a linear model,
and the network learns what the linear term cannot.

The hidden output (the last hidden layer) is the key the error memory retrieves by. Class
outputs have spare slots switched on by ``class_mask`` as classes appear; regression outputs are
trained on a standardised target and de-standardised by two buffers, so an exported graph
predicts in the target's own units.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import pairwise

import torch
from torch import nn

__all__ = ["EMBEDDING_INIT_SCALE", "TabularNet", "forward_multiply_adds"]

_MASKED = -1e9
# Scale of the embedding rows' initial values (nn.Embedding draws N(0, 1)). Most buckets of a
# high-cardinality feature are seen a handful of times, too few for Adam steps of size lr to
# move a row far from where it starts: rows started at N(0, 1) stay random inputs that the
# first layer cannot tell apart from signal. Rows started near zero add (almost) nothing until
# their category has been learned, as a one-hot linear model's zero-initialised weights.
# Not smaller: rows of frequent categories then start too small to be read at once, and a
# low-cardinality stream starts slower (docs/decisions/0031-small-embedding-init.md).
EMBEDDING_INIT_SCALE = 0.1


def forward_multiply_adds(
    numeric_slots: int,
    categorical_slots: int,
    embedding_dim: int,
    hidden: Sequence[int],
    n_outputs: int,
    regression: bool = False,
    wide: bool = False,
) -> int:
    """Multiply-adds in one event's forward pass through the TabularNet of these arguments
    (its dense layers; the embedding lookups are reads): its size, known before it is built."""
    inputs = numeric_slots + categorical_slots * embedding_dim
    widths = [inputs, *hidden, 1 if regression else n_outputs]
    dense = sum(a * b for a, b in pairwise(widths))
    return dense + (inputs * widths[-1] if wide else 0)


class TabularNet(nn.Module):
    """MLP over [numeric slots ‖ one embedding per categorical slot]."""

    def __init__(
        self,
        numeric_slots: int,
        categorical_slots: int,
        hash_buckets: int,
        embedding_dim: int,
        hidden: Sequence[int],
        n_outputs: int,
        regression: bool = False,
        wide: bool = False,
    ) -> None:
        super().__init__()
        self.regression = regression
        self.numeric_slots = numeric_slots
        self.categorical_slots = categorical_slots
        # Sparse gradients: a step touches only the buckets in its batch (lazy Adam updates them).
        self.embedding = nn.Embedding(hash_buckets, embedding_dim, padding_idx=0, sparse=True)
        with torch.no_grad():  # scaled, not redrawn: the seed's random stream stays the same
            self.embedding.weight.mul_(EMBEDDING_INIT_SCALE)
        layers: list[nn.Module] = []
        width = inputs = numeric_slots + categorical_slots * embedding_dim
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU()]
            width = size
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, 1 if regression else n_outputs)
        # registered last: its weights end the trainer's flat buffer, after the layers'
        self.wide: nn.Linear | None = None
        if wide:  # zero at first: the model starts as the network alone
            self.wide = nn.Linear(inputs, self.head.out_features, bias=False)
            nn.init.zeros_(self.wide.weight)
        self.register_buffer("class_mask", torch.zeros(n_outputs, dtype=torch.bool))
        self.register_buffer("target_loc", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))

    @property
    def hidden_dim(self) -> int:
        return self.head.in_features

    def raw(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked class logits [N, C] (or standardised value [N]) and hidden [N, H]."""
        inputs = torch.cat([num, self.embedding(cat).flatten(1)], dim=1)
        hidden = self.body(inputs)
        out = self.head(hidden)
        if self.wide is not None:
            out = out + self.wide(inputs)
        if self.regression:
            return out.squeeze(1), hidden
        return out.masked_fill(~self.class_mask, _MASKED), hidden

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities [N, C] (or value [N]) and hidden [N, H]."""
        out, hidden = self.raw(num, cat)
        if self.regression:
            return out * self.target_scale + self.target_loc, hidden
        # masked_fill: with no class switched on yet, every slot is 0 rather than uniform.
        return torch.softmax(out.float(), dim=1).masked_fill(~self.class_mask, 0.0), hidden
