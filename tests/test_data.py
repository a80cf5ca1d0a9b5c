import torch

from prevpos.data import PrevTokenData
from prevpos.sequences import notebook_sequences, probe_tokens, seeded_sequences


def test_sequences_start_with_bos_and_never_contain_it_elsewhere():
    tokens = seeded_sequences(512, 10, 101, 100, seed=3)
    assert (tokens[:, 0] == 100).all() and (tokens[:, 1:] < 100).all() and tokens[:, 1:].unique().numel() == 100


def test_notebook_probe_is_the_tutorials_sample_exactly():
    torch.manual_seed(42)
    expected = torch.randint(0, 101, (256, 10))
    expected[:, 0] = 100
    assert torch.equal(notebook_sequences(256, 10, 101, seed=42), expected)
    assert torch.equal(probe_tokens(256, 10, 101, 100, seed=42, notebook=True), expected)
    assert expected[0, :5].tolist() == [100, 32, 94, 55, 2]  # the first row printed in the tutorial


def test_validation_set_is_fixed_and_probe_does_not_touch_global_rng():
    data = PrevTokenData(val_size=100, batch_size=16)
    first, second = torch.cat(list(data.val_dataloader())), torch.cat(list(data.val_dataloader()))
    assert torch.equal(first, second) and first.shape == (100, 10)
    torch.manual_seed(0)
    expected = torch.rand(1)
    torch.manual_seed(0)
    data.probe_tokens()
    assert torch.equal(torch.rand(1), expected)


def test_test_set_is_fixed_and_not_the_validation_set():
    data = PrevTokenData(val_size=100, batch_size=16)
    validation, test = torch.cat(list(data.val_dataloader())), torch.cat(list(data.test_dataloader()))
    assert test.shape == validation.shape and torch.equal(test, torch.cat(list(data.test_dataloader())))
    shared = {tuple(row) for row in validation.tolist()} & {tuple(row) for row in test.tolist()}
    assert not shared  # 9 random tokens of 100: a repeat between two sets of 100 would be a seeding bug


class _FakeTrainer:
    def __init__(self, rank: int):
        self.global_rank = rank
        self.strategy = type("S", (), {"root_device": torch.device("cpu")})()


def _first_batch(rank: int, **kwargs) -> torch.Tensor:
    data = PrevTokenData(batch_size=8, **kwargs)
    data.trainer = _FakeTrainer(rank)
    data.setup("fit")
    return next(iter(data.train_dataloader()))


def test_training_stream_differs_per_rank_and_is_seeded():
    assert torch.equal(_first_batch(0), _first_batch(0))
    assert not torch.equal(_first_batch(0), _first_batch(1))
    assert not torch.equal(_first_batch(0), _first_batch(0, seed=1))


def test_generator_state_round_trips_through_state_dict():
    data = PrevTokenData(batch_size=8)
    data.trainer = _FakeTrainer(0)
    data.setup("fit")
    data.next_batch()
    state = data.state_dict()
    expected = data.next_batch()
    resumed = PrevTokenData(batch_size=8)
    resumed.load_state_dict(state)
    resumed.trainer = _FakeTrainer(0)
    resumed.setup("fit")
    assert torch.equal(resumed.next_batch(), expected)


def test_notebook_generator_can_draw_bos_mid_sequence():
    data = PrevTokenData(notebook_generator=True)
    assert data.n_tokens == 101


def test_validation_batches_do_not_shrink_with_a_small_training_batch():
    full = torch.cat(list(PrevTokenData(val_size=2048).val_dataloader()))
    for batch_size, expected in [(8, [1024, 1024]), (256, [1024, 1024]), (4096, [2048])]:
        batches = list(PrevTokenData(batch_size=batch_size, val_size=2048).val_dataloader())
        assert [len(b) for b in batches] == expected
        assert torch.equal(torch.cat(batches), full)  # the same held-out set whatever the split
