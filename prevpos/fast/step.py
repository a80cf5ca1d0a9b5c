"""One optimizer step of the previous-token model as a unit: eager anywhere, one CUDA graph replay on a GPU."""

import threading

import torch
from jaxtyping import Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer

from prevpos.loss import previous_token_loss


# Held while a CUDA graph records. CUDA work launched by another thread meanwhile (the analysis thread) would
# invalidate the capture, so that thread holds it too while it analyses on a GPU.
CUDA_CAPTURE_LOCK = threading.Lock()


class TrainStep:
    """zero_grad, forward, float64 loss, backward, clip, optimizer step, on the tokens passed in.

    With `capture` (CUDA only) the step is recorded once as a CUDA graph and every later call replays it: one
    launch instead of hundreds, which is what bounds a model this small. The recording runs 3 warm-up steps and
    then undoes them (weights and optimizer state restored), so the first replay is the first real step. The
    learning rate lives in a device tensor that each call refreshes from the param group, so an ordinary
    LR scheduler keeps working (a float would be baked into the graph).
    """

    def __init__(self, model: HookedTransformer, optimizer: torch.optim.Optimizer, clip: float | None,
                 capture: bool = False):
        self.model, self.optimizer, self.clip = model, optimizer, clip
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.capture = capture and self.params[0].is_cuda
        self.graph: torch.cuda.CUDAGraph | None = None
        self.tokens: Tensor | None = None  # the graph's static input
        self.logits: Tensor | None = None
        self.loss: Tensor | None = None
        self._lrs: list[Tensor] = []

    def __call__(self, tokens: Int[Tensor, "batch pos"]) -> Float[Tensor, ""]:
        if not self.capture:
            self.tokens = tokens
            self.logits, self.loss = self._body()
            return self.loss
        if self.graph is None:
            with CUDA_CAPTURE_LOCK:
                self._record(tokens)
        self.tokens.copy_(tokens)
        for lr, group in zip(self._lrs, self.optimizer.param_groups):
            lr.fill_(group["lr"])
        self.graph.replay()
        return self.loss

    def _body(self) -> tuple[Tensor, Tensor]:
        self.optimizer.zero_grad(set_to_none=True)
        logits = self.model(self.tokens)
        loss = previous_token_loss(logits, self.tokens)
        loss.backward()
        if self.clip is not None:
            torch.nn.utils.clip_grad_norm_(self.params, self.clip)
        self.optimizer.step()
        return logits.detach(), loss.detach()

    def _record(self, tokens: Tensor) -> None:
        self.tokens = tokens.clone()
        floats = [group["lr"] for group in self.optimizer.param_groups]
        self._lrs = [torch.tensor(lr, device=tokens.device) for lr in floats]
        for group, lr in zip(self.optimizer.param_groups, self._lrs):
            group["lr"] = lr
        saved = _snapshot(self.params, self.optimizer)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up off the capture stream, as torch.cuda.graphs' docs require
            for _ in range(3):
                self._body()
        torch.cuda.current_stream().wait_stream(side)
        _restore(saved, self.params, self.optimizer)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits, self.loss = self._body()
        for group, lr in zip(self.optimizer.param_groups, floats):
            group["lr"] = lr  # the scheduler keeps a float; __call__ copies it into the graph's tensor


def _snapshot(params: list[Tensor], optimizer: torch.optim.Optimizer) -> tuple[list[Tensor], dict]:
    state = {id(p): {k: v.clone() for k, v in optimizer.state[p].items() if isinstance(v, Tensor)}
             for p in params if p in optimizer.state}
    return [p.detach().clone() for p in params], state


@torch.no_grad()
def _restore(saved: tuple[list[Tensor], dict], params: list[Tensor], optimizer: torch.optim.Optimizer) -> None:
    weights, state = saved
    for p, w in zip(params, weights):
        p.copy_(w)
        for key, value in optimizer.state[p].items():
            if isinstance(value, Tensor):  # in place: the graph will read these very tensors
                value.copy_(state[id(p)][key]) if id(p) in state else value.zero_()
