"""The models users bring: a HuggingFace BERT (built from a config, nothing downloaded), TorchScript models and
factories with arguments on the command line.

* Captum's LayerIntegratedGradients on the word embeddings of a masked tiny BERT gives, per sample, the
  attributions of igcorr's Integrated Gradients, and with numpy's IGC formula the dataset maps of
  ``IGC(..., inputs=Embedded(..., mask=...))``, per position and per token id.
* The per-id map of a BERT trained on generated sentences ranks the deciding ids first.
* Scripted and traced models give the eager model's maps.
* ``igcorr run`` passes arguments to the model and data factories and runs a token study.
"""

from __future__ import annotations

import importlib.util
import sys
import textwrap
import warnings

import numpy as np
import pytest
import torch
from torch import nn

transformers = pytest.importorskip("transformers")

import igcorr  # noqa: E402
from igcorr.cli import main  # noqa: E402
from igcorr.errors import InputError, ModelError  # noqa: E402
from igcorr.inputs import Embedded  # noqa: E402
from igcorr.text import token_baseline, token_counts, top_tokens  # noqa: E402

PAD, CLS, SEP, MASK = 0, 1, 2, 3
N, LENGTH, VOCAB = 24, 10, 100


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run several times faster on one thread than on two busy shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_bert(torchscript: bool = False) -> nn.Module:
    config = transformers.BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=LENGTH, num_labels=1,
                                     pad_token_id=PAD, torchscript=torchscript)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return transformers.BertForSequenceClassification(config).double().eval()


def padded_sentences(n: int = N, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] words [SEP] padding: ids and attention mask (n, LENGTH), lengths 3 .. LENGTH, some sentences
    shorter than LENGTH - 2 so that the last positions are padding in all of them."""
    generator = torch.Generator().manual_seed(seed)
    words = torch.randint(5, VOCAB, (n, LENGTH), generator=generator)
    lengths = torch.randint(3, LENGTH - 1, (n,), generator=generator)
    positions = torch.arange(LENGTH)
    ids = torch.where(positions < lengths[:, None], words, torch.full_like(words, PAD))
    ids[:, 0] = CLS
    ids[torch.arange(n), lengths - 1] = SEP
    return ids, (positions < lengths[:, None]).long()


@pytest.fixture(scope="module")
def bert_study():
    model = tiny_bert()
    ids, mask = padded_sentences()
    generator = torch.Generator().manual_seed(2)
    with torch.no_grad():
        predicted = model(input_ids=ids, attention_mask=mask).logits[:, 0]
    y = predicted + 0.5 * predicted.std() * torch.randn(N, dtype=torch.float64, generator=generator)
    return model, ids, mask, y


def igc_formula(attributions: np.ndarray, predictions: np.ndarray, y: np.ndarray) -> np.ndarray:
    """IGC from per-sample attributions (N, ...): Cov_n(attribution, y) / (σ_y σ_ŷ), population moments."""
    centred = y - y.mean()
    covariance = np.tensordot(centred, attributions - attributions.mean(axis=0), axes=(0, 0)) / len(y)
    return covariance / (y.std() * predictions.std())


def captum_attributions(model, ids, mask, reference, method, n_steps):
    """Captum's LayerIntegratedGradients on the word embeddings, the mask as an additional forward argument."""
    from captum.attr import LayerIntegratedGradients

    def forward(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits[:, 0]

    layer = LayerIntegratedGradients(forward, model.bert.embeddings.word_embeddings)
    attributions = layer.attribute(ids, baselines=reference, additional_forward_args=(mask,), n_steps=n_steps,
                                   method=method)
    with torch.no_grad():
        predictions = forward(ids, mask)
    return attributions.detach().numpy(), predictions.numpy()


class EmbeddingsIn(nn.Module):
    """The BERT as a function of its word embeddings, for igcorr's per-sample Integrated Gradients."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, embeddings, attention_mask):
        return self.model(inputs_embeds=embeddings, attention_mask=attention_mask)


# Captum's riemann rules are igcorr's; Captum's riemann_trapezoid is igcorr's trapezoid × (n − 1) / n
RULES = [("riemann_middle", "riemann_middle", lambda n: 1.0),
         ("trapezoid", "riemann_trapezoid", lambda n: (n - 1) / n)]


@pytest.mark.parametrize("ours, theirs, factor", RULES, ids=[rule[0] for rule in RULES])
def test_masked_bert_matches_captum_per_sample_and_dataset_wise(bert_study, ours, theirs, factor):
    model, ids, mask, y = bert_study
    n_steps = 8
    # the mask-token baseline, held at the input where the attention mask is 0 (Captum: a reference of ids)
    reference = torch.where(mask.bool(), torch.full_like(ids, MASK), ids)
    theirs_attributions, predictions = captum_attributions(model, ids, mask, reference, theirs, n_steps)
    embedding = model.bert.embeddings.word_embeddings

    with torch.no_grad():
        embedded, embedded_reference = embedding(ids), embedding(reference)
    per_sample = igcorr.IntegratedGradients(EmbeddingsIn(model), output="logits").attribute(
        embedded, baselines=embedded_reference, target=0, n_steps=n_steps, method=ours,
        extra_inputs={"attention_mask": mask})
    np.testing.assert_allclose(per_sample.numpy() * factor(n_steps), theirs_attributions, rtol=0, atol=1e-5)

    data = ({"input_ids": ids, "attention_mask": mask}, y)
    options = {"baselines": token_baseline(embedding, LENGTH, MASK), "n_steps": n_steps, "method": ours,
               "progress": False}
    per_position = igcorr.IGC(model, output="logits", inputs=Embedded(
        "bert.embeddings.word_embeddings", mask="attention_mask")).attribute(data, **options)
    expected = igc_formula(theirs_attributions.sum(axis=-1), predictions, y.numpy())
    np.testing.assert_allclose(per_position.maps[0] * factor(n_steps), expected, rtol=0, atol=1e-5)
    assert np.all(per_position.maps[0, -2:] == 0.0)  # padding in every sentence: nothing attributed

    per_id = igcorr.IGC(model, output="logits", inputs=Embedded(
        embedding, mask="attention_mask", per="id")).attribute(data, **options)
    binned = np.zeros((N, VOCAB))
    for row in range(N):
        np.add.at(binned[row], ids[row].numpy(), theirs_attributions[row].sum(axis=-1))
    np.testing.assert_allclose(per_id.maps[0] * factor(n_steps), igc_formula(binned, predictions, y.numpy()),
                               rtol=0, atol=1e-5)
    np.testing.assert_allclose(per_id.map_sums, per_position.map_sums, rtol=0, atol=1e-12)
    assert per_id.maps.shape == (1, VOCAB) and per_id.metadata["inputs"]["per"] == "id"


def test_without_its_mask_the_bert_gives_another_map(bert_study):
    """The failure users met: the mask not passed to the model. With it passed the maps match Captum's."""
    model, ids, mask, y = bert_study
    reference = torch.where(mask.bool(), torch.full_like(ids, PAD), ids)
    attributions, predictions = captum_attributions(model, ids, mask, reference, "riemann_middle", 8)
    expected = igc_formula(attributions.sum(axis=-1), predictions, y.numpy())
    options = {"baselines": token_baseline(model.bert.embeddings.word_embeddings, LENGTH, PAD), "n_steps": 8,
               "method": "riemann_middle", "progress": False}
    layout = Embedded("bert.embeddings.word_embeddings")
    unmasked = igcorr.IGC(model, output="logits", inputs=layout).attribute((ids, y), **options)
    assert np.abs(unmasked.maps[0] - expected).max() > 0.05
    masked = igcorr.IGC(model, output="logits", inputs=layout).attribute(
        ({"input_ids": ids, "attention_mask": mask}, y), **options)
    np.testing.assert_allclose(masked.maps[0], expected, rtol=0, atol=1e-5)


def test_embeddings_by_keyword_and_a_traced_bert_give_the_hooked_maps(bert_study):
    model, ids, mask, y = bert_study
    embedding = model.bert.embeddings.word_embeddings
    data = ({"input_ids": ids, "attention_mask": mask}, y)
    options = {"baselines": token_baseline(embedding, LENGTH, PAD), "n_steps": 8, "progress": False}
    hooked = igcorr.IGC(model, output="logits", inputs=Embedded(
        embedding, mask="attention_mask", fixed_ids=[CLS, SEP])).attribute(data, **options)
    by_keyword = igcorr.IGC(model, output="logits", inputs=Embedded(
        embedding, mask="attention_mask", fixed_ids=[CLS, SEP], embeds="inputs_embeds")).attribute(data, **options)
    np.testing.assert_allclose(by_keyword.maps, hooked.maps, rtol=0, atol=1e-10)
    assert np.all(hooked.maps[0, 0] == 0.0)  # [CLS] is held at the input

    scripted_config = tiny_bert(torchscript=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the tracer's warnings about python values in the model's code
        traced = torch.jit.trace(scripted_config, example_kwarg_inputs={
            "inputs_embeds": embedding(ids[:2]).detach(), "attention_mask": mask[:2]}, strict=False)
        # traced transformers models return a tuple (transformers 4) or a dict (5): a callable takes the logits
        logits = lambda returned: returned[0] if isinstance(returned, tuple) else returned["logits"]  # noqa: E731
        from_traced = igcorr.IGC(traced, output=logits, inputs=Embedded(
            scripted_config.bert.embeddings.word_embeddings, mask="attention_mask", fixed_ids=[CLS, SEP],
            embeds="inputs_embeds")).attribute(data, **options)
    np.testing.assert_allclose(from_traced.maps, hooked.maps, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- TorchScript
class TinyText(nn.Module):
    """Mean of tanh'd embeddings over the attended tokens, then an MLP; takes ids or embeddings."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(20, 6)
        self.head = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2))

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        if inputs_embeds is None:
            assert input_ids is not None
            inputs_embeds = self.embed(input_ids)
        assert attention_mask is not None
        weights = attention_mask.unsqueeze(-1).to(inputs_embeds.dtype)
        return self.head((torch.tanh(inputs_embeds) * weights).sum(1) / weights.sum(1))


@pytest.fixture(scope="module")
def tiny_text():
    with torch.random.fork_rng():
        torch.manual_seed(3)
        model = TinyText().double().eval()
    generator = torch.Generator().manual_seed(4)
    ids = torch.randint(3, 20, (30, 7), generator=generator)
    mask = (torch.arange(7) < torch.randint(2, 8, (30, 1), generator=generator)).long()
    y = torch.randn(30, 2, dtype=torch.float64, generator=generator)
    return model, ({"input_ids": ids * mask, "attention_mask": mask}, y)


#: torch marks TorchScript as deprecated; users still bring scripted and traced models
JIT_DEPRECATED = pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:DeprecationWarning")


@JIT_DEPRECATED
@pytest.mark.parametrize("convert", ["script", "trace"])
def test_torchscript_models_give_the_eager_maps(tiny_text, convert):
    model, data = tiny_text
    inputs = data[0]
    options = {"baselines": token_baseline(model.embed, 7, PAD), "n_steps": 8, "progress": False}
    eager = igcorr.IGC(model, inputs=Embedded("embed", mask="attention_mask", per="id")).attribute(data, **options)
    if convert == "script":
        converted = torch.jit.script(model)
        embedding = "embed"  # a scripted submodule runs on its own
    else:
        example = {"inputs_embeds": model.embed(inputs["input_ids"][:2]).detach(),
                   "attention_mask": inputs["attention_mask"][:2]}
        converted = torch.jit.trace(model, example_kwarg_inputs=example)
        embedding = model.embed  # a traced model's submodules cannot be called: the eager embedding
    maps = igcorr.IGC(converted, inputs=Embedded(embedding, mask="attention_mask", per="id",
                                                 embeds="inputs_embeds")).attribute(data, **options)
    np.testing.assert_allclose(maps.maps, eager.maps, rtol=0, atol=1e-10)
    np.testing.assert_allclose(maps.map_sums, eager.map_sums, rtol=0, atol=1e-10)
    with pytest.raises(ModelError, match=r"Embedded\) needs forward hooks.*embeds=<keyword>"):
        igcorr.IGC(converted, inputs=Embedded(embedding, mask="attention_mask")).attribute(data, **options)
    if convert == "trace":
        with pytest.raises(ModelError, match="a submodule of a traced model cannot be called"):
            igcorr.IGC(converted, inputs=Embedded("embed", embeds="inputs_embeds")).attribute(data, **options)


@JIT_DEPRECATED
def test_torchscript_models_with_extra_inputs_give_the_eager_maps():
    """Float inputs with a non-attributed mask (MultipleInputs(attributed=...)), scripted and traced."""

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.layer = nn.Linear(5, 3)

        def forward(self, values: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
            return torch.tanh(self.layer(values * keep)).sum(dim=1, keepdim=True)

    with torch.random.fork_rng():
        torch.manual_seed(5)
        model = Masked().double().eval()
    generator = torch.Generator().manual_seed(6)
    values = torch.randn(40, 5, dtype=torch.float64, generator=generator)
    keep = (torch.rand(40, 5, generator=generator) > 0.3).double()
    y = torch.randn(40, dtype=torch.float64, generator=generator)
    data = ({"values": values, "keep": keep}, y)
    layout = igcorr.inputs.MultipleInputs(attributed=["values"])
    eager = igcorr.IGC(model, inputs=layout).attribute(data, n_steps=8, baselines=3, progress=False)
    for converted in (torch.jit.script(model), torch.jit.trace(model, (values[:2], keep[:2]))):
        maps = igcorr.IGC(converted, inputs=layout).attribute(data, n_steps=8, baselines=3, progress=False)
        np.testing.assert_allclose(maps.maps, eager.maps, rtol=0, atol=1e-10)


# ---------------------------------------------------------------------------------------------- token ranking
def test_the_per_id_map_ranks_the_deciding_ids_first(tmp_path):
    from igcorr_examples.text import DECIDING, VOCAB_SIZE, generate_sentences, run_text_example

    report = run_text_example(tmp_path / "text", n_samples=200, n_train=1200, epochs=5, n_steps=16,
                              progress=False)
    assert sorted(report["deciding_ranks"].values()) == [1, 2, 3, 4]
    assert report["test_accuracy"] > 0.9 and report["correlation"] > 0.7
    assert report["map_sum_ids"] == pytest.approx(report["map_sum_positions"], abs=1e-10)
    assert report["map_sum_ids"] == pytest.approx(report["correlation"] + report["baseline_term"], abs=0.02)
    for name in ("tokens.png", "positions.png", "summary.md", "result_ids.npz", "result_positions.npz"):
        assert (tmp_path / "text" / name).stat().st_size > 0, name

    per_id = igcorr.load(tmp_path / "text" / "result_ids.npz")
    test = generate_sentences(200, seed=1)
    data = (test.inputs(), test.targets)
    shares = top_tokens(per_id, data, k=4)
    assert {share.id for share in shares} == set(DECIDING)
    kept = test.input_ids[(test.attention_mask == 1) & (test.input_ids > 2)]  # [CLS] and [SEP] are held
    expected_counts = np.bincount(kept.numpy(), minlength=VOCAB_SIZE)
    assert [share.count for share in shares] == [int(expected_counts[share.id]) for share in shares]
    np.testing.assert_array_equal(token_counts(data, VOCAB_SIZE, mask="attention_mask", fixed_ids=[1, 2]),
                                  expected_counts)


# ---------------------------------------------------------------------------------------------- command line
STUDY = textwrap.dedent('''
    import torch
    from torch import nn


    class TextRegressor(nn.Module):
        """Returns a dict, like transformers models: the attributed tensor is its "logits"."""

        def __init__(self, vocab_size, width, seed=0):
            super().__init__()
            torch.manual_seed(seed)
            self.embed = nn.Embedding(vocab_size, width)
            self.head = nn.Linear(width, 1)

        def forward(self, input_ids, attention_mask):
            weights = attention_mask.unsqueeze(-1).to(torch.float32)
            pooled = (torch.tanh(self.embed(input_ids)) * weights).sum(1) / weights.sum(1)
            return {"logits": self.head(pooled)}


    def sentences(n, length=8, seed=1):
        generator = torch.Generator().manual_seed(seed)
        ids = torch.randint(1, 30, (n, length), generator=generator)
        mask = (torch.arange(length) < torch.randint(2, length + 1, (n, 1), generator=generator)).long()
        ids = ids * mask
        y = (ids == 7).float().sum(1) - (ids == 9).float().sum(1) + 0.3 * torch.randn(n, generator=generator)
        return {"input_ids": ids, "attention_mask": mask}, y
''')


@pytest.fixture
def text_study(tmp_path, monkeypatch):
    (tmp_path / "text_study.py").write_text(STUDY)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("text_study", None)


def test_run_passes_factory_arguments_and_runs_a_token_study(text_study, capsys):
    out = text_study / "out"
    code = main(["run", "--model", "text_study:TextRegressor", "--model-args", '{"vocab_size": 30, "width": 4}',
                 "--data", "text_study:sentences", "--data-args", '{"n": 60}', "--output", "logits",
                 "--embedding", "embed", "--attention-mask", "attention_mask", "--token-map", "id",
                 "--baseline-token", "0", "--steps", "8", "--out", str(out), "--no-progress"])
    assert code == 0, capsys.readouterr().err
    result = igcorr.load(out / "result.npz")
    assert result.maps.shape == (1, 30) and result.metadata["n_samples"] == 60
    assert result.metadata["inputs"]["mask"] == "attention_mask" and result.metadata["inputs"]["per"] == "id"
    assert (out / "tokens.png").stat().st_size > 0 and "| rank | token |" in (out / "tokens.md").read_text()

    sys.path.insert(0, str(text_study))
    import text_study as study

    model = study.TextRegressor(30, 4)
    data = study.sentences(60)
    embedding = token_baseline(model.embed, 8, 0)
    same = igcorr.IGC(model, output="logits", inputs=Embedded("embed", mask="attention_mask", per="id")).attribute(
        data, baselines=embedding, n_steps=8, progress=False)
    np.testing.assert_allclose(result.maps, same.maps, rtol=0, atol=1e-12)

    config = text_study / "study.toml"
    config.write_text('model = "text_study:TextRegressor"\ndata = "text_study:sentences"\noutput = "logits"\n'
                      'embedding = "embed"\nattention_mask = "attention_mask"\nsteps = 8\n'
                      f'out = "{text_study / "from_config"}"\n[model_args]\nvocab_size = 30\nwidth = 4\n'
                      '[data_args]\nn = 50\n')
    assert main(["run", "--config", str(config), "--data-args", '{"n": 40}', "--no-progress"]) == 0
    from_config = igcorr.load(text_study / "from_config" / "result.npz")
    assert from_config.metadata["n_samples"] == 40 and from_config.maps.shape == (1, 8)  # per position


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("igcorr run: error: "), captured.err
    return lines[0]


@pytest.mark.parametrize("flags, message", [
    (["--model-args", "{vocab_size: 30}"], "--model-args must be a JSON object"),
    (["--model-args", "[30, 4]"], "--model-args must be a JSON object"),
    (["--model-args", '{"vocab_size": 30, "depth": 2}'], "does not take the arguments"),
    (["--model-args", '{"vocab_size": 30, "width": 4}', "--data-args", '{"count": 3}'],
     "the data factory text_study:sentences does not take the arguments {'count': 3}"),
    (["--attention-mask", "attention_mask"], "--attention-mask need --embedding"),
    (["--embedding", "embed", "--vocab-size", "30"], "--vocab-size is the size of the per-id map"),
    (["--embedding", "embed", "--attributed", "input_ids"], "give one"),
    (["--embedding", "embed", "--fixed-ids", "1,x"], "--fixed-ids must be comma-separated token ids"),
    (["--embedding", "embed", "--baselines", "4", "--baseline-token", "0"], "either --baselines or --baseline-token"),
    (["--embedding", "embedding"], "no submodule 'embedding'"),
    (["--embedding", "embed", "--token-input", "ids"], "name the token ids among them"),
    (["--method", "naive-correlation", "--embedding", "embed"], "does not take --embedding/--attributed, --output"),
])
def test_bad_token_and_argument_options_are_one_line_errors(text_study, capsys, flags, message):
    base = ["run", "--model", "text_study:TextRegressor", "--data", "text_study:sentences", "--data-args",
            '{"n": 20}', "--output", "logits", "--steps", "4", "--out", str(text_study / "out"), "--no-progress"]
    if not any(flag == "--model-args" for flag in flags):
        base += ["--model-args", '{"vocab_size": 30, "width": 4}']
    assert main(base + flags) == 2
    assert message in _one_line_error(capsys)


def test_arguments_for_an_object_that_is_no_factory_are_refused(text_study, capsys):
    (text_study / "made.py").write_text("import torch\nmodel = torch.nn.Linear(3, 1)\n")
    try:
        assert main(["run", "--model", "made:model", "--model-args", '{"bias": false}', "--data",
                     "text_study:sentences", "--no-progress"]) == 2
    finally:
        sys.modules.pop("made", None)
    assert "is not a function or class" in _one_line_error(capsys)


def test_the_example_names_the_extra_when_transformers_is_missing(monkeypatch, capsys):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *args: None if name == "transformers" else real(name, *args))
    assert main(["example", "text-classification", "--no-progress"]) == 2
    assert 'pip install "igcorr[text]"' in capsys.readouterr().err


def test_embedded_refuses_what_does_not_fit(bert_study):
    model, ids, mask, y = bert_study
    data = ({"input_ids": ids, "attention_mask": mask}, y)
    with pytest.raises(InputError, match="per must be one of"):
        Embedded("bert.embeddings.word_embeddings", per="token")
    with pytest.raises(InputError, match="needs the number of token ids"):
        igcorr.IGC(model, output="logits", inputs=Embedded("bert.embeddings", per="id")).attribute(
            data, n_steps=4, progress=False)
    with pytest.raises(InputError, match="outside the vocabulary 0 .. 49"):
        igcorr.IGC(model, output="logits", inputs=Embedded(
            "bert.embeddings.word_embeddings", per="id", vocab_size=50)).attribute(data, n_steps=4, progress=False)
