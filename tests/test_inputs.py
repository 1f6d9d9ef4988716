"""Multi-input models and categorical inputs attributed in embedding space."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import igcorr
from igcorr.errors import InputError, ShapeError
from igcorr.inputs import Embedded


class TwoInputs(nn.Module):
    """An image (1, 4, 4) and a vector (3,) combined."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Flatten(), nn.Linear(16, 5), nn.Tanh())
        self.head = nn.Linear(5 + 3, 2)

    def forward(self, image, vector):
        return self.head(torch.cat([self.image(image), torch.tanh(vector)], dim=1))


@pytest.fixture
def two_input_data():
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(60, 1, 4, 4, dtype=torch.float64, generator=generator)
    vector = torch.randn(60, 3, dtype=torch.float64, generator=generator)
    y = image[:, 0, 0, :2] + vector[:, :1] + 0.2 * torch.randn(60, 2, dtype=torch.float64, generator=generator)
    return image, vector, y


def test_multi_input_maps_match_the_concatenated_model(two_input_data):
    image, vector, y = two_input_data
    model = TwoInputs().double().eval()
    result = igcorr.IGC(model).attribute(((image, vector), y), baselines=4, n_steps=16, progress=False)
    flat = torch.cat([image.reshape(60, -1), vector], dim=1)
    concatenated = lambda x: model(x[:, :16].reshape(-1, 1, 4, 4), x[:, 16:])
    reference = igcorr.IGC(concatenated).attribute((flat, y), baselines=4, n_steps=16, progress=False)
    np.testing.assert_allclose(result.maps, reference.maps, rtol=0, atol=1e-12)
    maps = result.input_maps()
    assert list(maps) == ["input_0", "input_1"] and result.metadata["n_samples"] == 60
    assert maps["input_0"].shape == (2, 1, 4, 4) and maps["input_1"].shape == (2, 3)
    total = maps["input_0"].reshape(2, -1).sum(1) + maps["input_1"].sum(1)
    np.testing.assert_allclose(total, result.map_sums, atol=1e-12)
    image_part = result["input_0"]
    assert image_part.maps.shape == (2, 1, 4, 4)
    table = image_part.region_sums({"top row": np.arange(16).reshape(4, 4) < 4})
    assert len(table) == 2


def test_dict_inputs_datasets_and_per_input_baselines(two_input_data):
    image, vector, y = two_input_data
    model = TwoInputs().double().eval()

    class Items(Dataset):
        def __len__(self):
            return 60

        def __getitem__(self, index):
            return {"image": image[index], "vector": vector[index]}, y[index]

    baselines = {"image": 0.0, "vector": torch.full((3,), 0.5, dtype=torch.float64)}
    from_dataset = igcorr.IGC(model).attribute(Items(), baselines=baselines, n_steps=64, progress=False)
    from_loader = igcorr.IGC(model).attribute(DataLoader(Items(), batch_size=7), baselines=baselines, n_steps=64,
                                              progress=False)
    np.testing.assert_allclose(from_dataset.maps, from_loader.maps, rtol=0, atol=1e-12)
    assert list(from_dataset.input_maps()) == ["image", "vector"]
    np.testing.assert_allclose(from_dataset.map_sums, from_dataset.correlation, atol=1e-3)  # shared baseline
    with pytest.raises(ShapeError, match="2 inputs"):
        igcorr.IGC(model).attribute(Items(), baselines=(0.0,), n_steps=8, progress=False)


class TextModel(nn.Module):
    """Token ids → embedding → mean over positions → linear."""

    def __init__(self, vocabulary=12, width=5):
        super().__init__()
        torch.manual_seed(2)
        self.embed = nn.Embedding(vocabulary, width)
        self.head = nn.Sequential(nn.Linear(width, 8), nn.Tanh(), nn.Linear(8, 1))

    def forward(self, ids):
        return self.head(self.embed(ids).mean(dim=1))


def test_tokens_attributed_in_embedding_space():
    generator = torch.Generator().manual_seed(3)
    ids = torch.randint(0, 12, (80, 7), generator=generator)
    model = TextModel().double().eval()
    with torch.no_grad():
        y = model(ids)[:, 0] + 0.1 * torch.randn(80, dtype=torch.float64, generator=generator)
    result = igcorr.IGC(model, inputs=Embedded("embed")).attribute((ids, y), n_steps=32, progress=False)
    assert result.maps.shape == (1, 7)  # one value per token position
    np.testing.assert_allclose(result.map_sums, result.correlation, atol=1e-4)  # zero baseline, shared
    assert result.metadata["inputs"]["embedded_shape"] == [7, 5]
    dims = igcorr.IGC(model, inputs=Embedded("embed", reduce=None)).attribute((ids, y), n_steps=32, progress=False)
    np.testing.assert_allclose(dims.maps.sum(axis=-1), result.maps, atol=1e-12)
    norms = igcorr.IGC(model, inputs=Embedded("embed", reduce=lambda a: a.norm(dim=-1))).attribute(
        (ids, y), n_steps=8, progress=False)
    assert norms.maps.shape == (1, 7)
    padding = model.embed(torch.zeros(7, dtype=torch.long)).detach()
    from_padding = igcorr.IGC(model, inputs=Embedded("embed")).attribute((ids, y), baselines=padding, n_steps=32,
                                                                          progress=False)
    np.testing.assert_allclose(from_padding.map_sums, from_padding.correlation, atol=1e-4)
    drawn = igcorr.IGC(model, inputs=Embedded("embed")).attribute((ids, y), baselines=4, n_steps=16,
                                                                   progress=False)
    np.testing.assert_allclose(drawn.map_sums, drawn.correlation + drawn.baseline_term, atol=1e-3)


def test_input_errors():
    model = TextModel().double().eval()
    ids = torch.randint(0, 12, (20, 7))
    y = torch.randn(20, dtype=torch.float64)
    with pytest.raises(InputError, match="gradients need continuous inputs"):
        igcorr.IGC(model).attribute((ids, y), progress=False)
    with pytest.raises(InputError, match="no submodule 'embedding'"):
        igcorr.IGC(model, inputs=Embedded("embedding")).attribute((ids, y), progress=False)
    with pytest.raises(InputError, match="embedding space"):
        igcorr.IGC(TwoInputs()).attribute(((ids.float()[:, :1], ids), y), progress=False)
