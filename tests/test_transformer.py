import pytest
import torch

from prevpos.errors import ConfigError
from prevpos.transformer import build_transformer, frozen_parameter_names
from tests.conftest import build_data, quiet_trainer
from prevpos.module import PrevTokenModel


def test_default_shape_is_the_tutorials():
    cfg = build_transformer().cfg
    assert (cfg.n_layers, cfg.n_heads, cfg.d_model, cfg.d_head, cfg.n_ctx, cfg.d_vocab) == (2, 1, 128, 128, 10, 101)
    assert cfg.attn_only and cfg.normalization_type is None


def test_pos_and_biases_are_frozen_zeros_and_not_optimized():
    model = build_transformer()
    frozen = frozen_parameter_names(model)
    assert "pos_embed.W_pos" in frozen and all(n.split(".")[-1].startswith("b_") for n in frozen if "W_pos" not in n)
    assert len(frozen) == 1 + 4 * 2 + 1  # W_pos, b_Q b_K b_V b_O per layer, unembed.b_U
    assert "unembed.b_U" in frozen


def test_frozen_parameters_are_not_optimized_and_stay_exactly_zero_after_training():
    module = PrevTokenModel(weight_decay=0.1, lr=1e-2)
    before = module.model.W_E.detach().clone()
    trainer = quiet_trainer(max_epochs=1)
    trainer.fit(module, build_data())
    assert not torch.equal(before, module.model.W_E)  # it did train
    optimized = {id(p) for group in trainer.optimizers[0].param_groups for p in group["params"]}
    assert optimized == {id(p) for p in module.model.parameters() if p.requires_grad}
    for name, param in module.model.named_parameters():
        if not param.requires_grad:
            assert torch.count_nonzero(param) == 0, name


def test_learned_positions_are_trainable():
    assert "pos_embed.W_pos" not in frozen_parameter_names(build_transformer(positional="learned"))


def test_init_is_seeded_and_leaves_global_rng_alone():
    torch.manual_seed(5)
    expected_next = torch.rand(1)
    torch.manual_seed(5)
    a, b = build_transformer(seed=0), build_transformer(seed=0)
    assert torch.equal(a.W_E, b.W_E) and not torch.equal(a.W_E, build_transformer(seed=1).W_E)
    assert torch.equal(torch.rand(1), expected_next)


@pytest.mark.parametrize("kwargs, setting", [
    (dict(n_ctx=1), "n_ctx"), (dict(d_vocab=2), "d_vocab"), (dict(n_heads=0), "n_heads"),
    (dict(n_layers=0), "n_layers"),
])
def test_bad_shapes_name_the_setting(kwargs, setting):
    with pytest.raises(ConfigError, match=setting):
        build_transformer(**kwargs)


def test_heads_need_not_divide_d_model():
    """TransformerLens sizes each head by d_head alone; 3 heads of 32 on d_model 128 were refused for a while."""
    model = build_transformer(n_heads=3, d_head=32)
    _, cache = model.run_with_cache(torch.randint(0, 100, (2, 10)))
    assert cache["pattern", 1].shape == (2, 3, 10, 10) and model.W_O.shape == (2, 3, 32, 128)


def test_embedding_lookup_matches_transformer_lens_values_gradients_and_hooks():
    model = build_transformer()
    assert type(model.embed).__name__ == "LookupEmbed"
    tokens = torch.randint(0, 101, (64, 10), generator=torch.Generator().manual_seed(0))
    embedded = model.embed(tokens)
    torch.testing.assert_close(embedded, model.embed.W_E[tokens], rtol=0, atol=0)  # TransformerLens's lookup
    upstream = torch.randn(embedded.shape, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad((embedded * upstream).sum(), model.embed.W_E)
    (reference,) = torch.autograd.grad((model.embed.W_E[tokens] * upstream).sum(), model.embed.W_E)
    torch.testing.assert_close(grad, reference)  # equal up to the order of the float sums
    assert grad.abs().sum() > 0
    _, cache = model.run_with_cache(tokens)
    torch.testing.assert_close(cache["hook_embed"], embedded)
