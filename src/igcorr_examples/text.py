"""A text-classification example that needs no download: a small BERT, generated sentences, IGC per token id.

Sentences are made of random filler ids from a vocabulary of 100, framed by ``[CLS]`` and ``[SEP]`` and padded
to a fixed length with an attention mask. Three sentences in four hold one of four *deciding* ids at a random
position, which sets the sentence's label: +1 for two of them, −1 for the other two, 0 when the sentence holds
none. The targets are the labels plus Gaussian noise (standard deviation 0.5), so that no model reaches a
correlation of 1. A ``BertForSequenceClassification`` with one output (the transformers regression head), built
from a ``BertConfig`` (2 layers, width 32; nothing is downloaded), learns the targets, and IGC of its output
against them is computed twice on held-out sentences: per position and per token id. The deciding ids sit at random
positions, so the per-position map is spread out; the per-id map puts the four deciding ids first.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

logger = logging.getLogger(__name__)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
#: first id of the ordinary vocabulary (0-4 are special: padding, [CLS], [SEP], [MASK], [UNK])
FIRST_WORD = 5
VOCAB_SIZE = 100
#: the ids that decide the label, and the label each one gives (sentences without any have label 0)
DECIDING = {17: 1.0, 42: 1.0, 58: -1.0, 81: -1.0}
#: share of the sentences that hold a deciding id
DECIDED_SHARE = 0.75
#: standard deviation of the noise added to the labels to make the targets
NOISE = 0.5
SPECIAL_NAMES = {PAD: "[PAD]", CLS: "[CLS]", SEP: "[SEP]", MASK: "[MASK]", 4: "[UNK]"}


def token_name(token_id: int) -> str:
    """A readable name of an id: the special tokens, ``w17+``/``w58-`` for deciding ids, ``w<n>`` otherwise."""
    if token_id in SPECIAL_NAMES:
        return SPECIAL_NAMES[token_id]
    if token_id in DECIDING:
        return f"w{token_id}{'+' if DECIDING[token_id] > 0 else '-'}"
    return f"w{token_id}"


@dataclass
class Sentences:
    """Generated sentences: ``input_ids`` and ``attention_mask`` (N, length) int64; ``labels`` (N,) float32 in
    {−1, 0, 1}, set by the deciding ids; ``targets`` (N,) float32, the labels plus noise."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor
    targets: torch.Tensor

    def inputs(self) -> dict[str, torch.Tensor]:
        return {"input_ids": self.input_ids, "attention_mask": self.attention_mask}


def generate_sentences(n: int, length: int = 16, min_words: int = 3, seed: int = 0) -> Sentences:
    """``n`` sentences of ``min_words`` to ``length - 2`` words, three in four of them holding one deciding id,
    padded to ``length``."""
    generator = torch.Generator().manual_seed(seed)
    fillers = torch.tensor([i for i in range(FIRST_WORD, VOCAB_SIZE) if i not in DECIDING])
    deciding = torch.tensor(list(DECIDING))
    gives = torch.tensor(list(DECIDING.values()), dtype=torch.float32)
    ids = torch.full((n, length), PAD, dtype=torch.int64)
    mask = torch.zeros((n, length), dtype=torch.int64)
    labels = torch.empty(n, dtype=torch.float32)
    words = torch.randint(min_words, length - 1, (n,), generator=generator)
    for row in range(n):
        count = int(words[row])
        sentence = fillers[torch.randint(len(fillers), (count,), generator=generator)]
        decided = bool(torch.rand(1, generator=generator) < DECIDED_SHARE)
        choice = int(torch.randint(len(deciding), (1,), generator=generator))
        if decided:
            sentence[int(torch.randint(count, (1,), generator=generator))] = deciding[choice]
        ids[row, : count + 2] = torch.cat([torch.tensor([CLS]), sentence, torch.tensor([SEP])])
        mask[row, : count + 2] = 1
        labels[row] = gives[choice] if decided else 0.0
    targets = labels + NOISE * torch.randn(n, generator=generator)
    return Sentences(ids, mask, labels, targets)


def build_model(seed: int = 0, length: int = 16) -> Any:
    """A 2-layer BERT with one output (transformers' regression head), from a config (no download), without
    dropout."""
    from transformers import BertConfig, BertForSequenceClassification

    config = BertConfig(vocab_size=VOCAB_SIZE, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                        intermediate_size=64, max_position_embeddings=length, num_labels=1, pad_token_id=PAD,
                        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return BertForSequenceClassification(config)


def train(model: Any, sentences: Sentences, epochs: int = 6, batch_size: int = 32, seed: int = 0,
          progress: bool = True) -> None:
    """Squared error of the output, AdamW, shuffled with a seeded generator."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    loss_function = torch.nn.MSELoss()
    model.train()
    n = len(sentences.labels)
    for _ in tqdm(range(epochs), desc="training", disable=not progress, leave=False):
        order = torch.randperm(n, generator=generator)
        for begin in range(0, n, batch_size):
            chosen = order[begin : begin + batch_size]
            outputs = model(input_ids=sentences.input_ids[chosen],
                            attention_mask=sentences.attention_mask[chosen]).logits[:, 0]
            loss = loss_function(outputs, sentences.targets[chosen])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
    model.eval()


def run_text_example(out_dir: str | Path = "igcorr-out/text-classification", n_samples: int = 600,
                     n_train: int = 2000, epochs: int = 6, n_steps: int = 32, seed: int = 0, threads: int | None = 1,
                     progress: bool = True) -> dict[str, Any]:
    """Generate, train, attribute per position and per id, and write the figures, results and summary.

    ``threads`` sets torch's threads for the run (restored afterwards; None keeps them): one thread is the
    fastest for a model this small, several times faster than two on a busy shared machine.

    Returns
    -------
    dict
        ``test_accuracy``, ``correlation``, ``map_sum_positions``, ``map_sum_ids``, ``top`` (the ten top tokens
        as (name, id, value, count)), ``deciding_ranks`` (rank of each deciding id in the per-id map, 1 = first),
        ``seconds`` (total), ``igc_seconds`` (both IGC runs), ``paths``.
    """
    from igcorr._files import check_writable

    out = check_writable(out_dir, "example outputs")
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        return _run(out, n_samples, n_train, epochs, n_steps, seed, progress)
    finally:
        torch.set_num_threads(previous)


def _run(out: Path, n_samples: int, n_train: int, epochs: int, n_steps: int, seed: int,
         progress: bool) -> dict[str, Any]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from igcorr import IGC
    from igcorr._files import atomic_write
    from igcorr.inputs import Embedded
    from igcorr.text import plot_top_tokens, token_baseline, tokens_markdown, top_tokens

    started = time.perf_counter()
    length = 16
    training = generate_sentences(n_train, length, seed=seed)
    test = generate_sentences(n_samples, length, seed=seed + 1)
    model = build_model(seed, length)
    train(model, training, epochs=epochs, seed=seed, progress=progress)
    with torch.no_grad():
        outputs = model(**test.inputs()).logits[:, 0]
    accuracy = float((outputs.clamp(-1, 1).round() == test.labels).float().mean())

    embedding = model.bert.embeddings.word_embeddings
    baseline = token_baseline(embedding, length, PAD)
    data = (test.inputs(), test.targets)
    options = {"baselines": baseline, "n_steps": n_steps, "seed": seed, "progress": progress}
    igc_started = time.perf_counter()
    per_position = IGC(model, output="logits", inputs=Embedded(
        embedding, mask="attention_mask", fixed_ids=[CLS, SEP])).attribute(data, **options)
    per_id = IGC(model, output="logits", inputs=Embedded(
        embedding, mask="attention_mask", fixed_ids=[CLS, SEP], per="id")).attribute(data, **options)
    igc_seconds = time.perf_counter() - igc_started

    shares = top_tokens(per_id, data, k=10, vocabulary=token_name)
    ranked = [share.id for share in top_tokens(per_id, data, k=VOCAB_SIZE)]
    deciding_ranks = {token_name(i): ranked.index(i) + 1 for i in DECIDING}
    paths = {"result_ids": per_id.save(out / "result_ids.npz"),
             "result_positions": per_position.save(out / "result_positions.npz")}
    figure, axis = plt.subplots(figsize=(5.0, 3.2))
    axis.bar(np.arange(length), per_position.maps[0], color="tab:gray")
    axis.set_xlabel("position")
    axis.set_ylabel("share of the correlation")
    axis.set_title(f"per position (Σ = {per_position.map_sums[0]:.3f})", fontsize=9)
    figure.tight_layout()
    tokens_figure = plot_top_tokens(per_id, data, k=12, vocabulary=token_name,
                                    title=f"per token id: top 12 of {VOCAB_SIZE} (Σ = {per_id.map_sums[0]:.3f})")
    for name, shown in (("positions", figure), ("tokens", tokens_figure)):
        paths[name] = atomic_write(out / f"{name}.png", lambda handle, shown=shown: shown.savefig(
            handle, format="png", dpi=120, bbox_inches="tight"), "figure")
        plt.close(shown)
    seconds = time.perf_counter() - started
    report = {
        "test_accuracy": accuracy, "correlation": float(per_id.correlation[0]),
        "map_sum_positions": float(per_position.map_sums[0]), "map_sum_ids": float(per_id.map_sums[0]),
        "baseline_term": float(per_id.baseline_term[0]),
        "top": [(share.token, share.id, share.value, share.count) for share in shares],
        "deciding_ranks": deciding_ranks, "seconds": seconds, "igc_seconds": igc_seconds, "paths": paths,
    }
    lines = ["# Text classification example", "",
             f"- {n_train} generated training sentences, {n_samples} held-out ones, padded to {length} tokens; "
             f"vocabulary of {VOCAB_SIZE} ids; deciding ids "
             + ", ".join(token_name(i) for i in DECIDING) + " (+: label +1, −: label −1; none: 0)",
             f"- BERT (2 layers, width 32) built from a config, trained {epochs} epochs on the noisy targets: "
             f"held-out accuracy {accuracy:.3f} (output rounded to −1, 0 or +1, against the labels)",
             f"- IGC of the output against the noisy targets, baseline: the padding token, {n_steps} nodes; padding held "
             "at the input (attention mask), [CLS] and [SEP] too",
             f"- Pearson r = {report['correlation']:.3f}, baseline term {report['baseline_term']:.3f}; Σ map per "
             f"position {report['map_sum_positions']:.3f}, Σ map per id {report['map_sum_ids']:.3f}",
             "- ranks of the deciding ids in the per-id map: "
             + ", ".join(f"{name} {rank}" for name, rank in deciding_ranks.items()),
             f"- run time {seconds:.1f} s (both IGC runs {igc_seconds:.1f} s)", "",
             "## Top tokens", "", tokens_markdown(shares), "",
             "![per position](positions.png)", "", "![per token id](tokens.png)", ""]
    paths["summary"] = atomic_write(out / "summary.md", lambda handle: handle.write("\n".join(lines).encode("utf-8")),
                                    "summary")
    logger.info("text example took %.1f s", seconds)
    return report
