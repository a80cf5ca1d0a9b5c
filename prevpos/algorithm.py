"""The mechanism written as code: a few numbers read off the trained weights, and the logits they imply.

The model (docs/science.md) does four things; each is one step of `algorithm_logits`:
1. Layer 0 gives every key one of a few scores — BOS, the same token as the query, another token — whatever
   the position. The causal softmax turns those equal scores into a BOS weight that falls with position.
2. So layer 0's output at position i is a mixture of BOS's value and the values of a_1..a_i, with weights A0.
3. Layer 1 scores key j from query i with two terms: *direct* (the tokens themselves: "not my own token")
   plus *composition* (the two layer-0 mixtures: "recent", since similar mixtures score alike).
4. Layer 1's OV copies: the logit of token v rises by `copy_gain` times the attention paid to copies of v.

Every bilinear circuit is summarised by `PairScores`: five means of its vocab x vocab matrix, by whether the
query and key are BOS, the same ordinary token, or different ordinary tokens. Nothing else of the weights is
used: if these 16 numbers recover the model's loss, the explanation is complete.
"""

from dataclasses import astuple, dataclass

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import FactoredMatrix, HookedTransformer

from prevpos.sequences import used_tokens


@dataclass(frozen=True)
class PairScores:
    """Mean of a [query token, key token] circuit over each kind of pair (BOS is the last token)."""

    bos_bos: float
    bos_tok: float  # query BOS, key an ordinary token
    tok_bos: float  # query an ordinary token, key BOS
    same: float  # the same ordinary token on both sides
    other: float  # two different ordinary tokens

    @classmethod
    def of(cls, circuit: Float[Tensor, "vocab vocab"]) -> "PairScores":
        tok = circuit[:-1, :-1]
        n = tok.shape[0]
        same = tok.diagonal().mean()
        other = (tok.sum() - tok.diagonal().sum()) / (n * n - n)
        return cls(*(float(x) for x in (circuit[-1, -1], circuit[-1, :-1].mean(), circuit[:-1, -1].mean(), same,
                                        other)))

    def lookup(self, tokens: Int[Tensor, "batch pos"], bos: int) -> Float[Tensor, "batch query key"]:
        """The score of every (query, key) pair of positions, from the kinds of their tokens alone."""
        is_bos = tokens == bos
        q_bos, k_bos = is_bos[:, :, None], is_bos[:, None, :]
        equal = tokens[:, :, None] == tokens[:, None, :]
        scores = torch.where(equal, self.same, self.other)
        scores = torch.where(~q_bos & k_bos, self.tok_bos, scores)
        scores = torch.where(q_bos & ~k_bos, self.bos_tok, scores)
        return torch.where(q_bos & k_bos, self.bos_bos, scores)


@dataclass(frozen=True)
class AlgorithmParams:
    layer0: PairScores  # W_E W_QK0 W_Eᵀ: who layer 0 attends to
    direct: PairScores  # W_E W_QK1 W_Eᵀ: layer 1's token-to-token term
    composition: PairScores  # (W_E W_OV0) W_QK1 (W_E W_OV0)ᵀ: layer 1's term between layer-0 outputs
    copy_gain: float  # W_E W_OV1 W_U: diagonal minus off-diagonal mean (how much attending to v raises v)

    def table(self) -> str:
        """The 16 numbers as a Markdown table, which TensorBoard's text tab renders."""
        rows = [("layer 0: W_E W_QK0 W_Eᵀ", self.layer0), ("layer 1 direct: W_E W_QK1 W_Eᵀ", self.direct),
                ("layer 1 composition: (W_E W_OV0) W_QK1 (W_E W_OV0)ᵀ", self.composition)]
        lines = ["| attention score, query · key | BOS · BOS | BOS · token | token · BOS | same token | other token |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {name} | " + " | ".join(f"{value:.3f}" for value in astuple(scores)) + " |"
                  for name, scores in rows]
        return "\n".join(lines) + f"\n\nlayer 1 copy gain (W_E W_OV1 W_U, diagonal minus the rest): {self.copy_gain:.3f}"


def read_params(model: HookedTransformer, n_tokens: int | None = None) -> AlgorithmParams:
    """The 16 numbers, from a 2-layer attention-only model with one head per layer (head 0 of each), over the
    tokens the data uses (data.n_tokens and BOS: the means over pairs would blur in untrained tokens otherwise)."""
    kept = used_tokens(model.cfg.d_vocab, n_tokens).to(model.W_E.device)
    W_E, W_U = model.W_E[kept], model.W_U[:, kept]
    # dtype: the default dtype is process-wide, and a bf16-true or 16-true fit changes it while it steps, beside
    # the analysis thread.
    embed = FactoredMatrix(W_E, torch.eye(W_E.shape[1], dtype=W_E.dtype, device=W_E.device))
    scale0, scale1 = model.blocks[0].attn.attn_scale, model.blocks[1].attn.attn_scale
    values0 = embed @ model.OV[0, 0]
    copy = (embed @ model.OV[1, 0] @ W_U).AB[:-1, :-1]
    n = copy.shape[0]
    return AlgorithmParams(
        layer0=PairScores.of((embed @ model.QK[0, 0] @ embed.T).AB / scale0),
        direct=PairScores.of((embed @ model.QK[1, 0] @ embed.T).AB / scale1),
        composition=PairScores.of((values0 @ model.QK[1, 0] @ values0.T).AB / scale1),
        copy_gain=float(copy.diagonal().mean() - (copy.sum() - copy.diagonal().sum()) / (n * n - n)),
    )


def causal_softmax(scores: Float[Tensor, "batch query key"]) -> Float[Tensor, "batch query key"]:
    n = scores.shape[-1]
    future = torch.ones(n, n, dtype=torch.bool, device=scores.device).triu(1)
    return scores.masked_fill(future, float("-inf")).softmax(-1)


def algorithm_patterns(params: AlgorithmParams, tokens: Int[Tensor, "batch pos"], bos: int
                       ) -> tuple[Float[Tensor, "batch pos pos"], Float[Tensor, "batch pos pos"]]:
    """Layer 0's and layer 1's attention patterns, as the algorithm computes them."""
    layer0 = causal_softmax(params.layer0.lookup(tokens, bos))
    # Layer-0 output at i = sum_k A0[i, k] value(t_k), so the composition score is A0 M A0ᵀ, M = pair means.
    composition = layer0 @ params.composition.lookup(tokens, bos) @ layer0.mT
    layer1 = causal_softmax(params.direct.lookup(tokens, bos) + composition)
    return layer0, layer1


def algorithm_logits(params: AlgorithmParams, tokens: Int[Tensor, "batch pos"], d_vocab: int
                     ) -> Float[Tensor, "batch pos vocab"]:
    """Logits = copy_gain x (layer-1 attention summed per source token). BOS is token d_vocab - 1."""
    _, layer1 = algorithm_patterns(params, tokens, d_vocab - 1)
    sources = torch.nn.functional.one_hot(tokens, d_vocab).to(layer1.dtype)
    return params.copy_gain * layer1 @ sources
