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


# ---------------------------------------------------------------------------------------------- padding, ids
class MeanPooled(nn.Module):
    """Embedding → mean over all positions (the mask is not used) → tanh → linear; takes ``attention_mask``."""

    def __init__(self, vocabulary=12, width=4):
        super().__init__()
        torch.manual_seed(4)
        self.embed = nn.Embedding(vocabulary, width)
        self.head = nn.Linear(width, 1)

    def forward(self, input_ids, attention_mask):
        return self.head(torch.tanh(self.embed(input_ids).mean(dim=1)))


@pytest.fixture
def padded_ids():
    """Ids (50, 6) of a vocabulary of 12, padding (id 0) after 2 to 4 tokens: positions 4 and 5 are padding in
    every sample."""
    generator = torch.Generator().manual_seed(5)
    ids = torch.randint(1, 12, (50, 6), generator=generator)
    mask = (torch.arange(6) < torch.randint(2, 5, (50, 1), generator=generator)).long()
    y = torch.randn(50, dtype=torch.float64, generator=generator)
    return ids * mask, mask, y


def _igc_formula(attributions, predictions, y):
    centred = y - y.mean()
    covariance = np.tensordot(centred, attributions - attributions.mean(axis=0), axes=(0, 0)) / len(y)
    return covariance / (y.std() * predictions.std())


def test_masked_positions_and_fixed_ids_are_held_at_the_input(padded_ids):
    from igcorr.text import token_baseline

    ids, mask, y = padded_ids
    model = MeanPooled().double().eval()
    data = ({"input_ids": ids, "attention_mask": mask}, y)
    baseline = token_baseline(model.embed, 6, 3)  # token 3 everywhere: differs from the padding embedding
    options = {"baselines": baseline, "n_steps": 16, "method": "riemann_middle", "progress": False}
    held = igcorr.IGC(model, inputs=Embedded("embed", mask="attention_mask", fixed_ids=[5])).attribute(
        data, **options)
    plain = igcorr.IGC(model, inputs=Embedded("embed")).attribute(data, **options)
    assert np.all(held.maps[0, 4:] == 0.0) and np.all(plain.maps[0, 4:] != 0.0)

    # reference: per-sample IG with a baseline equal to the input at the held positions, and the IGC formula
    function = lambda embedded: model.head(torch.tanh(embedded.mean(dim=1)))  # noqa: E731
    with torch.no_grad():
        embedded = model.embed(ids)
        keep = (mask.bool() & (ids != 5)).unsqueeze(-1)
        per_sample_baselines = torch.where(keep, baseline.expand_as(embedded), embedded)
        predictions = function(embedded)[:, 0].numpy()
    attributions = igcorr.IntegratedGradients(function).attribute(
        embedded, baselines=per_sample_baselines, target=0, n_steps=16, method="riemann_middle").sum(-1).numpy()
    np.testing.assert_allclose(held.maps[0], _igc_formula(attributions, predictions, y.numpy()), rtol=0, atol=1e-12)

    per_id = igcorr.IGC(model, inputs=Embedded("embed", mask="attention_mask", fixed_ids=[5], per="id")).attribute(
        data, **options)
    binned = np.zeros((50, 12))
    for row in range(50):
        np.add.at(binned[row], ids[row].numpy(), attributions[row])
    np.testing.assert_allclose(per_id.maps[0], _igc_formula(binned, predictions, y.numpy()), rtol=0, atol=1e-12)
    assert per_id.maps[0, 5] == 0.0 and per_id.maps[0, 0] == 0.0  # a fixed id, and the padding
    np.testing.assert_allclose(per_id.map_sums, held.map_sums, rtol=0, atol=1e-12)


def test_the_model_gets_the_real_ids_along_the_path(padded_ids):
    """A model that derives its padding mask from the ids (as some transformers derive position ids) sees the
    sample's own ids at every path point, not placeholders."""

    class FromIds(MeanPooled):
        def forward(self, input_ids):
            keep = (input_ids != 0).unsqueeze(-1).to(torch.float64)
            return self.head((torch.tanh(self.embed(input_ids)) * keep).sum(1) / keep.sum(1))

    ids, mask, y = padded_ids
    model = FromIds().double().eval()
    result = igcorr.IGC(model, inputs=Embedded("embed")).attribute((ids, y), n_steps=16, progress=False)

    class OnEmbeddings(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, embedded, keep):
            weights = keep.unsqueeze(-1)
            return self.model.head((torch.tanh(embedded) * weights).sum(1) / weights.sum(1))

    with torch.no_grad():
        embedded = model.embed(ids)
    reference = igcorr.IGC(OnEmbeddings(), inputs=igcorr.inputs.MultipleInputs(attributed=["embedded"])).attribute(
        ({"embedded": embedded, "keep": (ids != 0).double()}, y), n_steps=16, progress=False)
    np.testing.assert_allclose(result.maps, reference.input_maps("embedded").sum(axis=-1), rtol=0, atol=1e-12)


def test_per_id_reduction_and_its_shape_probe():
    layout = Embedded("embed", per="id")
    model = TextModel().double()
    ids = torch.tensor([[1, 1, 4, 0, 2, 3, 1]])
    layout.fit(ids, model)
    assert layout.map_shape == (12,) and layout.describe()["vocab_size"] == 12
    attributions = torch.arange(7, dtype=torch.float64).reshape(1, 1, 7, 1).expand(1, 1, 7, 5) / 5
    binned = layout.reduce(attributions, {"input": ids})
    expected = np.zeros(12)
    np.add.at(expected, ids[0].numpy(), np.arange(7.0))
    np.testing.assert_allclose(binned[0, 0].numpy(), expected, rtol=0, atol=1e-15)
    assert layout.reduce(torch.zeros(1, 1, 7, 5)).shape == (1, 1, 12)  # the run's shape probe
    with pytest.raises(InputError, match="need the batch's token ids"):
        layout.reduce(attributions)
    with pytest.raises(InputError, match="outside the vocabulary 0 .. 11"):
        layout.reduce(attributions, {"input": ids + 9})


@pytest.mark.parametrize("arguments, message", [
    ({"per": "token"}, "per must be one of 'position', 'id'"),
    ({"vocab_size": 0}, "vocab_size must be a positive integer"),
    ({"fixed_ids": "101"}, "fixed_ids must be a list of token ids"),
    ({"fixed_ids": [101, -1]}, "every entry of fixed_ids must be an integer >= 0"),
    ({"mask": ""}, "mask must be the name of the 0/1 mask"),
    ({"embeds": 3}, "embeds must be the keyword"),
    ({"input": ""}, "input must be the name of the ids"),
])
def test_embedded_arguments_are_checked(arguments, message):
    with pytest.raises(InputError, match=message):
        Embedded("embed", **arguments)


def test_embedded_options_that_do_not_fit_the_samples(padded_ids):
    ids, mask, y = padded_ids
    model = MeanPooled().double().eval()
    with pytest.raises(InputError, match="mask='attention_mask' names one of several inputs"):
        igcorr.IGC(TextModel(), inputs=Embedded("embed", mask="attention_mask")).attribute((ids, y), progress=False)
    with pytest.raises(InputError, match="mask='padding' is not one of the samples' other inputs"):
        igcorr.IGC(model, inputs=Embedded("embed", mask="padding")).attribute(
            ({"input_ids": ids, "attention_mask": mask}, y), progress=False)
    with pytest.raises(InputError, match="mask='input_ids' is not one of the samples' other inputs"):
        igcorr.IGC(model, inputs=Embedded("embed", mask="input_ids")).attribute(
            ({"input_ids": ids, "attention_mask": mask}, y), progress=False)
    with pytest.raises(InputError, match="samples must be dicts"):
        igcorr.IGC(model, inputs=Embedded("embed", embeds="inputs_embeds")).attribute(((ids, mask), y),
                                                                                      progress=False)
    with pytest.raises(ShapeError, match="it needs one entry per token"):
        igcorr.IGC(model, inputs=Embedded("embed", mask="attention_mask")).attribute(
            ({"input_ids": ids, "attention_mask": mask[:, :3]}, y), progress=False)


def test_token_helpers(padded_ids):
    from igcorr.text import ids_shape, token_baseline, token_counts, top_tokens

    ids, mask, y = padded_ids
    model = MeanPooled().double().eval()
    padding = token_baseline(model.embed, 6, 0)
    np.testing.assert_array_equal(padding.numpy(), model.embed.weight[0].detach().expand(6, 4).numpy())
    assert torch.count_nonzero(token_baseline(model.embed, (2, 3))) == 0 and token_baseline(
        model.embed, (2, 3)).shape == (2, 3, 4)
    assert ids_shape((ids, y)) == (6,) and ids_shape(({"input_ids": ids, "attention_mask": mask}, y)) == (6,)
    counts = token_counts(({"input_ids": ids, "attention_mask": mask}, y), 12, mask="attention_mask")
    np.testing.assert_array_equal(counts, np.bincount(ids[mask.bool()].numpy(), minlength=12))
    assert counts[0] == 0 and token_counts((ids, y), 12)[0] == int((ids == 0).sum())
    result = igcorr.IGC(model, inputs=Embedded("embed")).attribute(
        ({"input_ids": ids, "attention_mask": mask}, y), n_steps=8, progress=False)
    with pytest.raises(InputError, match="no per-id map"):
        top_tokens(result)
    with pytest.raises(InputError, match="outside the vocabulary 0 .. 4"):
        token_counts((ids, y), 5)


def test_per_id_maps_from_loaders_and_checkpoints(padded_ids, tmp_path):
    ids, mask, y = padded_ids
    model = MeanPooled().double().eval()

    class Sentences(Dataset):
        def __len__(self):
            return len(y)

        def __getitem__(self, index):
            return {"input_ids": ids[index], "attention_mask": mask[index]}, y[index]

    layout = Embedded("embed", mask="attention_mask", per="id")
    options = {"n_steps": 8, "progress": False}
    reference = igcorr.IGC(model, inputs=layout).attribute(({"input_ids": ids, "attention_mask": mask}, y),
                                                           **options)
    loaded = igcorr.IGC(model, inputs=layout).attribute(DataLoader(Sentences(), batch_size=7), **options)
    np.testing.assert_allclose(loaded.maps, reference.maps, rtol=0, atol=1e-12)
    checkpoint = tmp_path / "run.ckpt"
    first = igcorr.IGC(model, inputs=layout).attribute(Sentences(), checkpoint=checkpoint, batch_size=16, **options)
    resumed = igcorr.IGC(model, inputs=layout).attribute(Sentences(), checkpoint=checkpoint, batch_size=16,
                                                         **options)
    np.testing.assert_array_equal(resumed.maps, first.maps)
    np.testing.assert_allclose(first.maps, reference.maps, rtol=0, atol=1e-12)
