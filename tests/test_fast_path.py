"""The fast path (model.fast) trains exactly like the normal path; on a GPU its CUDA graph matches eager."""

import warnings

import pytest
import torch
from lightning.fabric.utilities.exceptions import MisconfigurationException

from prevpos.errors import ConfigError
from prevpos.fast.step import TrainStep
from prevpos.fast.training import FastStep
from prevpos.module import PrevTokenModel
from prevpos.transformer import build_transformer
from tests.conftest import build_data, needs_cuda, quiet_trainer


def trained(fast: FastStep | None, k: int, **trainer_kw) -> tuple[PrevTokenModel, object]:
    module = PrevTokenModel(lr=1e-2, warmup_steps=3, fast=fast)
    data = build_data(batch_size=32, steps_per_epoch=6 // k, batches_per_step=k)
    trainer = quiet_trainer(max_epochs=2, **trainer_kw)
    trainer.fit(module, data)
    return module, trainer


@pytest.fixture()
def one_thread():
    """Two CPU threads make float sums order-dependent (two normal runs differ by ~1e-7); one thread is exact."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_fast_path_gives_the_normal_paths_parameters_on_cpu(one_thread):
    """3 optimizer steps per Lightning step, eager on CPU: same batches, same clip, same schedule, same weights."""
    normal, normal_trainer = trained(None, 1, gradient_clip_val=1.0)
    fast, fast_trainer = trained(FastStep(clip=1.0), 3)
    assert fast_trainer.global_step == normal_trainer.global_step == 12
    assert fast.lr_schedulers().get_last_lr() == normal.lr_schedulers().get_last_lr()
    for (name, a), (_, b) in zip(normal.model.named_parameters(), fast.model.named_parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    assert fast_trainer.callback_metrics["val/acc"] == normal_trainer.callback_metrics["val/acc"]
    initial = PrevTokenModel(lr=1e-2).model.W_E
    assert not torch.equal(fast.model.W_E, initial)  # it did train


def test_fast_path_settings_that_cannot_work_fail_in_one_line():
    with pytest.raises(MisconfigurationException, match="gradient_clip_val"):  # Lightning's own check
        trained(FastStep(), 3, gradient_clip_val=1.0)
    with pytest.raises(ConfigError, match="needs model.fast"):
        trained(None, 3)


def step_pair(capture: bool, seed: int = 0) -> TrainStep:
    model = build_transformer(seed=seed).cuda()
    model.cfg.device = "cuda"
    params = [p for p in model.parameters() if p.requires_grad]
    extra = {"fused": True, "capturable": True} if capture else {}
    optimizer = torch.optim.AdamW(params, lr=3e-3, **extra)
    return TrainStep(model, optimizer, clip=1.0, capture=capture)


@needs_cuda
def test_cuda_graph_step_matches_eager_and_hooks_still_work():
    generator = torch.Generator("cuda").manual_seed(0)
    batches = [torch.randint(0, 100, (256, 10), device="cuda", generator=generator) for _ in range(20)]
    for batch in batches:
        batch[:, 0] = 100
    eager, graphed = step_pair(False), step_pair(True)
    for batch in batches:
        eager(batch)
        graphed(batch)
    assert graphed.graph is not None
    for a, b in zip(eager.params, graphed.params):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-4)  # fused vs foreach AdamW: rounding only
    logits, cache = graphed.model.run_with_cache(batches[0])
    torch.testing.assert_close(logits, graphed.model(batches[0]))
    assert cache["pattern", 1].shape == (256, 1, 10, 10)


@needs_cuda
def test_fast_path_through_fit_on_gpu_learns():
    """With the default plugins on: they analyse in the analysis process, all six (on an H100 three had stayed in
    a thread: the module they pickled with held the CUDA graph), while the graph records and replays."""
    from prevpos.bench.runs import default_plugins

    module = PrevTokenModel(lr=1e-2, fast=FastStep())
    data = build_data(batch_size=256, steps_per_epoch=10, batches_per_step=10, val_size=2048)
    plugins = default_plugins()
    for plugin in plugins:
        plugin.strict = True  # a failed analysis fails the test
    trainer = quiet_trainer(accelerator="cuda", max_epochs=4, callbacks=plugins)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.fit(module, data)
    assert not [w for w in caught if "analyses in a thread" in str(w.message)]
    assert trainer.global_step == 400
    assert trainer.callback_metrics["val/acc"] > 0.95
    assert module.optimizers().optimizer.param_groups[0]["fused"]  # the capturable fused kernel, in the graph


def test_fast_path_logs_at_optimizer_steps(in_tmp):
    """global_step and the logged steps count optimizer steps, so curves line up with normal runs."""
    from lightning.pytorch.loggers import TensorBoardLogger
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    steps, lrs = {}, {}
    for fast, k in ((None, 1), (FastStep(), 3)):
        trainer = quiet_trainer(max_epochs=2, logger=TensorBoardLogger(str(in_tmp), name=f"k{k}"), log_every_n_steps=1,
                                gradient_clip_val=None if fast else 1.0)
        trainer.fit(PrevTokenModel(fast=fast), build_data(steps_per_epoch=6 // k, batches_per_step=k))
        events = EventAccumulator(str(next((in_tmp / f"k{k}").rglob("events*")))).Reload()
        steps[k] = trainer.global_step, [e.step for e in events.Scalars("val/acc")]
        lrs[k] = [(e.step, e.value) for e in events.Scalars("train/lr")]
        assert [step for step, _ in lrs[k]] == [e.step for e in events.Scalars("train/loss")]
    assert steps[3] == steps[1] == (12, [5, 11])
    # At the steps train/loss is logged, the lr each trained at (LearningRateMonitor's missed them with K = 10 and
    # log_every_n_steps 5; K = 3 here logs at 2, 5, ...): the normal path's at those steps.
    normal = dict(lrs[1])
    assert lrs[3] and all(value == pytest.approx(normal[step]) for step, value in lrs[3])
