"""The feature cache of ``finetune=linear``: hits, and no stale features after any change of its inputs."""

import os
import threading

import pytest
import torch
from torchvision import transforms

from tests.conftest import make_tree
from wiseft.data.datasets import LabeledImageDataset, scan_image_folder
from wiseft.data.feature_cache import FeatureCache, cached_features, feature_key
from wiseft.errors import ConfigError


class CountingEncoder(torch.nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.proj = torch.nn.Linear(3 * 8 * 8, 5)
        self.images_seen = 0

    def forward(self, x):
        self.images_seen += len(x)
        return self.proj(x.flatten(1))


@pytest.fixture
def dataset(tmp_path):
    root = make_tree(tmp_path / "imgs", per_class=3, size=8)
    samples = scan_image_folder(root, ["blue", "green", "red"])
    return LabeledImageDataset(samples, ["blue", "green", "red"], transforms.ToTensor())


def _features(encoder, dataset, cache, **kw):
    return cached_features(encoder, dataset, feature_key(encoder, dataset, "32-true"), cache, batch_size=4, **kw)


def test_second_call_reads_the_cache(dataset, tmp_path):
    encoder, cache = CountingEncoder(), FeatureCache(tmp_path / "cache")
    first = _features(encoder, dataset, cache)
    assert encoder.images_seen == len(dataset) == len(first.labels)
    second = _features(encoder, dataset, cache)
    assert encoder.images_seen == len(dataset)  # no image went through the encoder again
    assert torch.equal(first.features, second.features) and torch.equal(first.labels, second.labels)
    assert first.labels.tolist() == [label for _, label in dataset.samples]
    with torch.no_grad():
        direct = encoder.proj(torch.stack([dataset[i][0] for i in range(len(dataset))]).flatten(1))
    torch.testing.assert_close(first.features, direct)


def test_a_different_model_never_reuses_features(dataset, tmp_path):
    cache = FeatureCache(tmp_path / "cache")
    old = _features(CountingEncoder(seed=0), dataset, cache)
    changed = CountingEncoder(seed=0)
    with torch.no_grad():
        changed.proj.bias[0] += 1e-3  # the same architecture and name, one weight nudged
    new = _features(changed, dataset, cache)
    assert changed.images_seen == len(dataset)
    assert not torch.equal(old.features, new.features)
    assert len(list(cache.folder.glob("*.safetensors"))) == 2


def test_transform_and_files_are_part_of_the_key(dataset, tmp_path):
    cache, encoder = FeatureCache(tmp_path / "cache"), CountingEncoder()
    _features(encoder, dataset, cache)
    dataset.transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize([0.5] * 3, [0.5] * 3)])
    _features(encoder, dataset, cache)
    assert encoder.images_seen == 2 * len(dataset)
    path = dataset.samples[0][0]
    os.utime(path, ns=(1, 1))  # an image replaced in place
    _features(encoder, dataset, cache)
    assert encoder.images_seen == 3 * len(dataset)


def test_an_entry_written_for_another_key_is_not_read(dataset, tmp_path):
    cache, encoder = FeatureCache(tmp_path / "cache"), CountingEncoder()
    key = feature_key(encoder, dataset, "32-true")
    other = {**key, "precision": "bf16-mixed"}
    features = _features(encoder, dataset, None)
    cache.save(other, features, cache.path(key))  # e.g. a hand-copied file under the wrong name
    assert cache.load(key) is None


def test_several_processes_need_a_cache_folder(dataset):
    with pytest.raises(ConfigError, match=r"finetune\.feature_cache"):
        _features(CountingEncoder(), dataset, None, rank=0, world_size=2, collectives=object())


class ThreadCollectives:
    """The strategy's collectives for ranks simulated by threads."""

    def __init__(self, world_size: int) -> None:
        self._barrier = threading.Barrier(world_size)
        self._slot = [None]
        self._votes: list[bool] = []

    def barrier(self, name=None):
        self._barrier.wait()

    def broadcast(self, obj, src=0):
        if obj is not None:
            self._slot[0] = obj
        self._barrier.wait()
        return self._slot[0]

    def reduce_boolean_decision(self, decision, all=True):
        self._votes.append(decision)
        self._barrier.wait()
        out = min(self._votes) if all else max(self._votes)
        self._barrier.wait()
        return out


def test_shards_computed_on_every_rank_are_assembled_into_one_entry(dataset, tmp_path):
    cache, world = FeatureCache(tmp_path / "cache"), 2
    encoders = [CountingEncoder() for _ in range(world)]
    collectives = ThreadCollectives(world)
    results = [None] * world

    def rank_main(rank):
        results[rank] = _features(encoders[rank], dataset, cache, rank=rank, world_size=world,
                                  collectives=collectives)

    threads = [threading.Thread(target=rank_main, args=(r,)) for r in range(world)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert [e.images_seen for e in encoders] == [5, 4]  # 9 images split, none twice
    single = _features(CountingEncoder(), dataset, None)
    for r in range(world):
        assert torch.allclose(results[r].features, single.features) and torch.equal(results[r].labels, single.labels)
    assert [p.name for p in cache.folder.iterdir()] == [cache.path(feature_key(encoders[0], dataset, "32-true")).name]
