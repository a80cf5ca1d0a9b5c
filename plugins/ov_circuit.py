"""OV circuits: what each head writes to the logits for each token it attends to (copying, if the diagonal wins)."""

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import FactoredMatrix, HookedTransformer

from prevpos.analysis import AnalysisPlugin, Findings, ProbeRun
from prevpos.figures import heatmap
from prevpos_plugins.attention import head_scores, mean_patterns, prev_token_head


def full_ov_circuit(model: HookedTransformer, layer: int, head: int, tokens: Tensor | None = None) -> FactoredMatrix:
    """W_E W_OV W_U [vocab, vocab]: row = token attended to, column = the logit it moves. Kept factored (rank d_head).
    `tokens`: only those rows and columns (ProbeRun.used_tokens: the tokens the data uses)."""
    W_E, W_U = (model.W_E, model.W_U) if tokens is None else (model.W_E[tokens], model.W_U[:, tokens])
    return W_E @ model.OV[layer, head] @ W_U


def copy_top1(circuit: Float[Tensor, "vocab vocab"]) -> float:
    """Fraction of source tokens whose largest output logit is the token itself."""
    return (circuit.argmax(-1) == torch.arange(circuit.shape[0], device=circuit.device)).float().mean().item()


def copy_eigen(circuit: FactoredMatrix) -> float:
    """Sum(eigenvalues) / sum(|eigenvalues|): 1 for a pure copier, -1 for an anti-copier (Elhage et al. 2021).

    FactoredMatrix takes the eigenvalues of the small d_head x d_head product, whose non-zero ones are the circuit's.
    Solved on the CPU: on CUDA, torch.linalg.eig synchronises and hands a matrix this small to a host solver anyway,
    and took 13.6 ms per head on an H100 against 6.3 ms on its CPU (scripts/gpu_check.sh).
    """
    eigenvalues = FactoredMatrix(circuit.A.cpu(), circuit.B.cpu()).eigenvalues
    return (eigenvalues.sum().real / eigenvalues.abs().sum()).item()


class OVCircuit(AnalysisPlugin):
    """Each head's full OV circuit W_E W_OV W_U, with how strongly it copies (top-1 diagonal, eigenvalue score), over
    the tokens the data uses (all of them by default; with data.n_tokens 50 the other 50 were never trained)."""

    def analyze(self, run: ProbeRun) -> Findings:
        findings = Findings()
        used = run.used_tokens
        bos = run.model.cfg.d_vocab - 1  # an ordinary token in a run without BOS (notebook_generator draws it)
        tokens = ["BOS" if t == bos and run.bos else str(t) for t in used.tolist()]
        copier = prev_token_head(head_scores(mean_patterns(run)))  # the head the mechanism copies with
        for l, h in run.heads():
            head = f"L{l}H{h}"
            circuit = full_ov_circuit(run.model, l, h, used)
            dense = circuit.AB
            findings.scalar(f"ov/copy_top1/{head}", copy_top1(dense))
            findings.scalar(f"ov/copy_eigen/{head}", copy_eigen(circuit))
            findings.figure(f"ov/full_circuit/{head}", heatmap, matrix=dense, title=f"{head} full OV circuit W_E W_OV W_U",
                            x_labels=tokens, y_labels=tokens, xlabel="output logit", ylabel="token attended to",
                            centered=True, colorbar_label="logit")
            if (l, h) == copier:  # a tag every model has, as attention/prev_token_score/prev_token_head
                findings.scalar("ov/copy_top1/prev_token_head", copy_top1(dense))
        return findings
