"""Batches and EpochSampler: the four orders, epochs, drop_last and exact mid-epoch resume."""

import json

import pytest
import torch
from torch.utils.data import TensorDataset

from trainlab.data import augment as A
from trainlab.data.batches import SHUFFLES, Batches, EpochSampler, epoch_order, loader

N = 23  # not a multiple of the batch size: the last batch is smaller


def data(n: int = N) -> tuple[torch.Tensor, torch.Tensor]:
    """x[i] = (i, i, i): each row names its sample."""
    y = torch.arange(n)
    return y.float().unsqueeze(1).repeat(1, 3), y


def epoch_labels(batches) -> torch.Tensor:
    return torch.cat([yb for _, yb in batches])


# --- the orders -----------------------------------------------------------------------------


def test_every_epoch_is_a_new_permutation():
    batches = Batches(*data(), 5)
    epochs = [epoch_labels(batches) for _ in range(3)]
    for labels in epochs:
        assert torch.equal(labels.sort().values, torch.arange(N))
    assert not torch.equal(epochs[0], epochs[1]) and not torch.equal(epochs[1], epochs[2])


def test_once_repeats_one_permutation():
    batches = Batches(*data(), 5, shuffle="once")
    first, second = epoch_labels(batches), epoch_labels(batches)
    assert torch.equal(first, second)
    assert not torch.equal(first, torch.arange(N))
    assert torch.equal(first, epoch_labels(Batches(*data(), 5)))  # epoch 0's permutation


def test_none_keeps_the_stored_order():
    batches = Batches(*data(), 5, shuffle="none")
    for _ in range(2):
        assert torch.equal(epoch_labels(batches), torch.arange(N))


def test_replacement_draws_n_samples_with_repeats():
    batches = Batches(*data(200), 16, shuffle="replacement")
    labels = epoch_labels(batches)
    assert len(labels) == 200 and len(labels.unique()) < 200
    assert not torch.equal(labels, epoch_labels(batches))


def test_order_is_a_pure_function_of_seed_and_epoch():
    seed, epoch = 7, 3
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    expected = torch.randperm(N, generator=generator)
    assert torch.equal(epoch_order(N, epoch, seed=seed), expected)
    batches = Batches(*data(), 4, seed=seed)
    for _ in range(epoch):
        epoch_labels(batches)
    assert torch.equal(epoch_labels(batches), expected)


def test_seed_changes_the_order_and_global_rng_is_untouched():
    state = torch.get_rng_state()
    a, b = epoch_labels(Batches(*data(), 4, seed=0)), epoch_labels(Batches(*data(), 4, seed=1))
    assert not torch.equal(a, b)
    assert torch.equal(torch.get_rng_state(), state)


def test_len_drop_last_and_batch_sizes():
    assert len(Batches(*data(), 5)) == 5
    sizes = [len(yb) for _, yb in Batches(*data(), 5)]
    assert sizes == [5, 5, 5, 5, 3]
    dropped = Batches(*data(), 5, drop_last=True)
    assert len(dropped) == 4 and [len(yb) for _, yb in dropped] == [5] * 4


def test_rows_stay_with_their_labels():
    for xb, yb in Batches(*data(), 6):
        assert torch.equal(xb[:, 0].long(), yb)


def test_epoch_counter_and_abandoned_epochs():
    batches = Batches(*data(), 5)
    assert batches.epoch == 0
    for _ in batches:
        assert batches.epoch == 0
    assert batches.epoch == 1
    for _ in batches:
        break  # abandon epoch 1 after one batch
    assert batches.epoch == 1 and batches.batch == 1
    assert torch.equal(epoch_labels(batches), epoch_order(N, 2))  # iter() starts epoch 2
    assert batches.epoch == 3


# --- resume mid-epoch ------------------------------------------------------------------------


def take(iterator, k: int) -> list:
    return [next(iterator) for _ in range(k)]


def assert_same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def make_batches(shuffle: str, augment=None) -> Batches:
    x, y = data()
    return Batches(x, y, 4, shuffle=shuffle, seed=11, augment=augment)


@pytest.mark.parametrize("shuffle", SHUFFLES)
@pytest.mark.parametrize("augmented", [False, True])
def test_resume_mid_epoch_gives_the_same_batches(shuffle, augmented):
    augment = A.Compose([A.Shift1d(0.5, 1), A.Noise1d(0.5, 0.1)]) if augmented else None
    reference = make_batches(shuffle, augment)
    list(reference)  # epoch 0
    uninterrupted = list(reference) + list(reference)  # epochs 1 and 2

    run = make_batches(shuffle, augment)
    list(run)
    seen = take(iter(run), 3)
    state = json.loads(json.dumps(run.state_dict()))  # plain JSON values
    assert state["epoch"] == 1 and state["batch"] == 3

    resumed = make_batches(shuffle, augment)
    resumed.load_state_dict(state)
    rest = list(resumed) + list(resumed)
    assert_same_batches(seen + rest, uninterrupted)


def test_resume_at_an_epoch_boundary():
    run = make_batches("epoch")
    for _ in run:
        pass
    resumed = make_batches("epoch")
    resumed.load_state_dict(run.state_dict())
    assert_same_batches(list(resumed), list(run))


def test_state_saved_after_the_last_batch_starts_the_next_epoch():
    run, reference = make_batches("epoch"), make_batches("epoch")
    iterator = iter(run)
    take(iterator, len(run))  # last batch received, loop not yet told the epoch is over
    resumed = make_batches("epoch")
    resumed.load_state_dict(run.state_dict())
    list(reference)
    assert_same_batches(list(resumed), list(reference))


def test_augmentation_is_train_batches_only_and_reproducible():
    x, y = data()
    noise = A.Noise1d(1.0, 0.5)
    first = list(Batches(x, y, 4, augment=noise))
    again = list(Batches(x, y, 4, augment=noise))
    plain = list(Batches(x, y, 4))
    assert_same_batches(first, again)
    assert all(not torch.equal(a[0], p[0]) for a, p in zip(first, plain))


# --- DataLoader path -------------------------------------------------------------------------


def make_loader(shuffle: str, batch_size: int = 4, drop_last: bool = False):
    return loader(TensorDataset(*data()), batch_size, shuffle=shuffle, drop_last=drop_last, seed=11)


@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_loader_follows_the_same_orders_as_batches(shuffle):
    from_loader = make_loader(shuffle)
    from_batches = make_batches(shuffle)
    for _ in range(2):
        assert_same_batches(list(from_loader), list(from_batches))


@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_loader_resume_mid_epoch(shuffle):
    reference = make_loader(shuffle)
    list(reference)
    uninterrupted = list(reference) + list(reference)

    run = make_loader(shuffle)
    list(run)
    seen = take(iter(run), 3)
    state = json.loads(json.dumps(run.sampler.state_dict()))
    assert state["epoch"] == 1 and state["consumed"] == 12

    resumed = make_loader(shuffle)
    resumed.sampler.load_state_dict(state)
    assert_same_batches(seen + list(resumed) + list(resumed), uninterrupted)


def test_loader_drop_last_and_len():
    assert len(make_loader("epoch", 5)) == 5
    dropped = make_loader("epoch", 5, drop_last=True)
    assert len(dropped) == 4
    for _ in range(2):
        assert [len(yb) for _, yb in dropped] == [5] * 4


def test_sampler_epochs_are_permutations():
    sampler = EpochSampler(N, seed=2)
    epochs = [list(sampler) for _ in range(2)]
    assert sorted(epochs[0]) == sorted(epochs[1]) == list(range(N))
    assert epochs[0] != epochs[1] and sampler.epoch == 2 and len(sampler) == N


# --- validation ------------------------------------------------------------------------------


def test_bad_arguments():
    x, y = data()
    cases = [
        (lambda: Batches(x, y, 0), r"Invalid batch_size: 0 \(must be an integer >= 1\)"),
        (lambda: Batches(x, y, 2.0), r"Invalid batch_size: 2\.0 \(must be an integer >= 1\)"),
        (lambda: Batches(x, y, 4, shuffle="random"), r"Invalid shuffle: 'random' \(must be one"),
        (lambda: Batches(x, y[:5], 4), r"Invalid y length: 5 \(must equal the length of x, 23\)"),
        (lambda: Batches(x[:0], y[:0], 4), r"Invalid x length: 0 \(must hold at least one"),
        (lambda: Batches(x, y, 30, drop_last=True), r"Invalid batch_size: 30 \(must be <= the 23"),
        (lambda: Batches(x, y, 4, seed=-1), r"Invalid seed: -1 \(must be an integer >= 0\)"),
        (lambda: Batches(x, y, 4, augment=3), r"Invalid augment: 3 \(must be None or callable"),
        (lambda: EpochSampler(0), r"Invalid num_samples: 0 \(must be an integer >= 1\)"),
        (lambda: loader(TensorDataset(x, y), 4, num_workers=-1), r"Invalid num_workers: -1"),
    ]
    for make, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            make()


def test_bad_states():
    batches = make_batches("epoch")
    good = batches.state_dict()
    cases = [
        ({**good, "batch": 99}, r"Invalid state batch: 99 \(must be an integer in \[0, 6\]\)"),
        ({**good, "batch_size": 8}, r"Invalid state batch_size: 8 \(must be 4, as in this object"),
        ({**good, "shuffle": "x"}, r"Invalid state shuffle: 'x' \(must be one of 'epoch'"),
        ({**good, "epoch": -1}, r"Invalid state epoch: -1 \(must be an integer >= 0\)"),
        ({"epoch": 0}, r"Invalid state: \['epoch'\] \(must be a dict with keys"),
    ]
    for state, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            batches.load_state_dict(state)
    with pytest.raises(ValueError, match=r"Invalid state consumed: 24 \(must be an integer in"):
        EpochSampler(N).load_state_dict({**EpochSampler(N).state_dict(), "consumed": 24})
