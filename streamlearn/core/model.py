"""TabularNet: hashed-categorical embeddings + numeric inputs -> MLP -> (prediction, hidden).

With ``periodic`` = k > 0, every numeric slot z enters the network as z and 2k periodic
features, s·sin(2π·c·z) and s·(cos(2π·c·z) − 1) for k fixed frequencies c (the periodic
embeddings of Gorishniy, Rubachev & Babenko, "On Embeddings for Numerical Features in Tabular
Deep Learning", NeurIPS 2022, with the frequencies not trained): a threshold or a wave in one
feature, which trees split on at once and a ReLU network of raw inputs needs many units for,
is one weight away. Every feature is 0 where z is (a missing value, a slot not in use), so the
step kernels' active widths still end at the last slot in use; the small scale s keeps the
extra inputs from disturbing a concept the raw values already carry
(docs/decisions/0041-periodic-inputs.md).

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
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from streamlearn.kernels.periodic import periodic_inputs

if TYPE_CHECKING:
    from streamlearn.core.linear import LinearWeights

__all__ = [
    "EMBEDDING_INIT_SCALE",
    "ServedNet",
    "TabularNet",
    "forward_multiply_adds",
    "numeric_input_width",
    "periodic_frequencies",
]

_MASKED = -1e9
# Scale of the embedding rows' initial values (nn.Embedding draws N(0, 1)). Most buckets of a
# high-cardinality feature are seen a handful of times, too few for Adam steps of size lr to
# move a row far from where it starts: rows started at N(0, 1) stay random inputs that the
# first layer cannot tell apart from signal. Rows started near zero add (almost) nothing until
# their category has been learned, as a one-hot linear model's zero-initialised weights.
# Not smaller: rows of frequent categories then start too small to be read at once, and a
# low-cardinality stream starts slower (docs/decisions/0031-small-embedding-init.md).
EMBEDDING_INIT_SCALE = 0.1
# The seed of the periodic features' frequencies: fixed, as a hash function's, so every model
# of a stream (the live one, a fresh one, a past expert) reads the same inputs the same way.
_FREQUENCY_SEED = 20221127


def periodic_frequencies(
    numeric_slots: int, k: int, sigma: float, sharp_sigma: float
) -> torch.Tensor:
    """The fixed frequencies [numeric_slots, k]: N(0, σ²) draws from a seed of their own (the
    global random stream, which seeds the weights, is left as it was), the last k // 2 of
    each slot's drawn with ``sharp_sigma`` instead: one spread suits either smooth trends or
    sharp thresholds, a stream may need both (decision 0050)."""
    generator = torch.Generator().manual_seed(_FREQUENCY_SEED)
    spread = torch.full((k,), sigma)
    spread[k - k // 2 :] = sharp_sigma
    return torch.randn((numeric_slots, k), generator=generator) * spread


def numeric_input_width(numeric_slots: int, periodic: int) -> int:
    """Layer 0's numeric columns: each slot, with its 2k periodic features where k > 0."""
    return numeric_slots * (1 + 2 * periodic)


def forward_multiply_adds(
    numeric_slots: int,
    categorical_slots: int,
    embedding_dim: int,
    hidden: Sequence[int],
    n_outputs: int,
    regression: bool = False,
    wide: bool = False,
    periodic: int = 0,
) -> int:
    """Multiply-adds in one event's forward pass through the TabularNet of these arguments
    (its dense layers; the embedding lookups are reads): its size, known before it is built."""
    inputs = numeric_input_width(numeric_slots, periodic) + categorical_slots * embedding_dim
    widths = [inputs, *hidden, 1 if regression else n_outputs]
    dense = sum(a * b for a, b in pairwise(widths))
    return dense + (inputs * widths[-1] if wide else 0)


class TabularNet(nn.Module):
    """MLP over [numeric inputs ‖ one embedding per categorical slot]."""

    frequencies: torch.Tensor | None

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
        periodic: int = 0,
        periodic_sigma: float = 0.3,
        periodic_sharp_sigma: float = 0.9,
        periodic_scale: float = 0.15,
    ) -> None:
        super().__init__()
        self.regression = regression
        self.numeric_slots = numeric_slots
        self.categorical_slots = categorical_slots
        self.periodic_scale = periodic_scale
        self.numeric_inputs = numeric_input_width(numeric_slots, periodic)
        # Sparse gradients: a step touches only the buckets in its batch (lazy Adam updates them).
        self.embedding = nn.Embedding(hash_buckets, embedding_dim, padding_idx=0, sparse=True)
        with torch.no_grad():  # scaled, not redrawn: the seed's random stream stays the same
            self.embedding.weight.mul_(EMBEDDING_INIT_SCALE)
        layers: list[nn.Module] = []
        width = inputs = self.numeric_inputs + categorical_slots * embedding_dim
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
        # a buffer (checkpoints and exports carry it), None without periodic features
        self.register_buffer(
            "frequencies",
            periodic_frequencies(numeric_slots, periodic, periodic_sigma, periodic_sharp_sigma)
            if periodic
            else None,
        )
        self.register_buffer("class_mask", torch.zeros(n_outputs, dtype=torch.bool))
        self.register_buffer("target_loc", torch.zeros(()))
        self.register_buffer("target_scale", torch.ones(()))

    def __setstate__(self, state: dict[str, Any]) -> None:
        """Models pickled before the periodic features have none."""
        super().__setstate__(state)
        self._buffers.setdefault("frequencies", None)
        self.__dict__.setdefault("numeric_inputs", self.numeric_slots)
        self.__dict__.setdefault("periodic_scale", 0.0)

    @property
    def hidden_dim(self) -> int:
        return self.head.in_features

    def inputs(self, num: torch.Tensor) -> torch.Tensor:
        """The numeric inputs [N, numeric_inputs] of standardised values [N, numeric_slots]:
        the values themselves, with their periodic features where the model has them."""
        if self.frequencies is None:
            return num
        return periodic_inputs(num, self.frequencies, self.periodic_scale)

    def from_values(
        self, num: torch.Tensor, cat: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`forward` of standardised values [N, numeric_slots] (their numeric inputs made
        here): what the model is served as."""
        return self(self.inputs(num), cat)

    def raw(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Masked class logits [N, C] (or standardised value [N]) and hidden [N, H] of numeric
        inputs [N, numeric_inputs] (see :meth:`inputs`) and bucket ids."""
        inputs = torch.cat([num, self.embedding(cat).flatten(1)], dim=1)
        hidden = self.body(inputs)
        out = self.head(hidden)
        if self.wide is not None:
            out = out + self.wide(inputs)
        if self.regression:
            return out.squeeze(1), hidden
        return out.masked_fill(~self.class_mask, _MASKED), hidden

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities [N, C] (or value [N]) and hidden [N, H] of numeric inputs (see
        :meth:`inputs`; :meth:`from_values` takes standardised values) and bucket ids."""
        out, hidden = self.raw(num, cat)
        if self.regression:
            return out * self.target_scale + self.target_loc, hidden
        # masked_fill: with no class switched on yet, every slot is 0 rather than uniform.
        return torch.softmax(out.float(), dim=1).masked_fill(~self.class_mask, 0.0), hidden


class ServedNet(nn.Module):
    """A TabularNet as it is served: standardised values [N, numeric_slots] in, their numeric
    inputs computed inside (the exported graph holds the periodic features' frequencies); with
    ``linear`` (a classifier's linear model, core/linear.py), the prediction is the mix of the
    network's and the linear model's (its rates mixed by their shares) by its share, as the
    worker scores."""

    def __init__(self, model: TabularNet, linear: LinearWeights | None = None) -> None:
        super().__init__()
        self.model = model
        self.share = 0.0 if linear is None else float(linear.share)
        if linear is not None:
            self.register_buffer("linear_numeric", torch.from_numpy(linear.numeric))
            self.register_buffer("linear_buckets", torch.from_numpy(linear.buckets))
            self.register_buffer("linear_bias", torch.from_numpy(linear.bias[:, None, :]))
            shares = torch.tensor(linear.rate_shares, dtype=torch.float32).view(-1, 1, 1)
            self.register_buffer("linear_rate_shares", shares)

    def forward(self, num: torch.Tensor, cat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        prediction, hidden = self.model.from_values(num, cat)
        if not hasattr(self, "linear_numeric"):
            return prediction, hidden
        # every rate's logits [rates, N, W]
        logits = torch.matmul(num, self.linear_numeric) + self.linear_bias
        logits = logits + self.linear_buckets[:, cat].sum(dim=2)
        mask = self.model.class_mask
        each = torch.softmax(logits.masked_fill(~mask, _MASKED), dim=2).masked_fill(~mask, 0.0)
        linear = (self.linear_rate_shares * each).sum(dim=0)
        return (1.0 - self.share) * prediction + self.share * linear, hidden
