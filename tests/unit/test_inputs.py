"""Input specs: any rank the engine supports, per-channel/per-feature preprocessing, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from robaudit.classifier import Classifier
from robaudit.config import config_from_dict
from robaudit.errors import ConfigError, DataError
from robaudit.inputs import InputSpec, needs_image_error, stat_view
from robaudit.loading.data import array_input_shape, dataset_from_arrays
from robaudit.profiles import choose


@pytest.mark.parametrize(
    ("shape", "kind", "text"),
    [((3, 32, 32), "image", "3x32x32 image"), ((1, 4000), "sequence", "1x4000 sequence"),
     ((30,), "vector", "30-feature vector")],
)
def test_kind_follows_rank(shape: tuple[int, ...], kind: str, text: str) -> None:
    spec = InputSpec.of(shape)
    assert spec.kind == kind and spec.describe() == text and spec.dims == int(np.prod(shape))


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match=r"rank 4; valid input shapes are \[C, H, W\]"):
        InputSpec.of((1, 1, 8, 8))
    with pytest.raises(ValueError, match="every dimension must be > 0"):
        InputSpec.of((0, 8))
    with pytest.raises(ValueError, match=r"input_kind 'image' needs a shape \[C, H, W\]"):
        InputSpec.of((30,), "image")
    with pytest.raises(ConfigError, match=r"model.input_shape: .*rank 4"):
        config_from_dict({"model": {"input_shape": [1, 1, 8, 8]}, "attacks": [{"name": "fgsm"}]})


def test_config_accepts_vectors_and_checks_per_feature_stats() -> None:
    cfg = config_from_dict(
        {"model": {"input_shape": [30], "mean": [0.5] * 30}, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    )
    assert cfg.model.spec.kind == "vector"
    with pytest.raises(ConfigError, match="std has 3 values; the input has 30 feature"):
        config_from_dict({"model": {"input_shape": [30], "std": [1, 1, 1]}, "attacks": [{"name": "fgsm"}]})


def test_preprocessing_broadcasts_over_channels_or_features() -> None:
    assert stat_view(4) == (1, -1, 1, 1) and stat_view(3) == (1, -1, 1) and stat_view(2) == (1, -1)
    seen: list[torch.Tensor] = []

    class Echo(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x)
            return x.flatten(1)[:, :2]

    mean = [0.1 * i for i in range(5)]
    clf = Classifier(Echo(), num_classes=2, mean=mean, std=[2.0] * 5)
    x = torch.rand(3, 5)
    clf.logits(x)
    assert torch.allclose(seen[-1], (x - torch.tensor(mean)) / 2.0)
    seq = torch.rand(3, 5, 7)  # 5 channels x 7 steps: one statistic per channel
    clf.logits(seq)
    assert torch.allclose(seen[-1], (seq - torch.tensor(mean)[:, None]) / 2.0)


def test_auto_profile_fits_non_images() -> None:
    assert choose((30,))[0].name == "tabular"
    assert choose((1, 16000))[0].name == "waveform"
    assert choose((3, 32, 32))[0].name == "cifar"


def test_loaders_read_vectors_and_sequences() -> None:
    x = np.random.RandomState(0).rand(20, 30).astype(np.float32)
    y = np.arange(20) % 2
    assert array_input_shape(x) == (30,)
    ds = dataset_from_arrays(x, y, input_shape=(30,), bounds=(0, 1), num_classes=2, samples=None, seed=0)
    assert tuple(ds.samples.shape) == (20, 30)
    seq = np.random.RandomState(0).rand(20, 4000).astype(np.float32)
    ds = dataset_from_arrays(seq, y, input_shape=(1, 4000), bounds=(0, 1), num_classes=2, samples=None, seed=0)
    assert tuple(ds.samples.shape) == (20, 1, 4000)  # one channel added
    with pytest.raises(DataError, match=r"the model's input is a 31-feature vector, so x must be N x 31"):
        dataset_from_arrays(x, y, input_shape=(31,), bounds=(0, 1), num_classes=2, samples=None, seed=0)


def test_image_sources_refuse_other_inputs() -> None:
    from robaudit.loading.data import load_data

    with pytest.raises(DataError, match=r"holds images, but the model's input is a 30-feature vector"):
        load_data("torchvision:CIFAR10:/nowhere", split="test", input_shape=(30,), bounds=(0, 1),
                  num_classes=2, samples=None, seed=0)


def test_needs_image_message() -> None:
    msg = needs_image_error("defense 'jpeg'", InputSpec.of((30,)), "cfg.yaml: defenses[0].name")
    assert msg == ("cfg.yaml: defenses[0].name: defense 'jpeg' works on images ([C, H, W]) only; "
                   "this model's input is a 30-feature vector [F]")
