"""Evaluation: do our low-confidence tokens find the hallucinated spans humans marked? (Mu-SHROOM)

Data: Mu-SHROOM (SemEval-2025 Task 3) in the data directory (bench/data.py), val v2 + test_labeled v1: model
outputs with one value per generated token and human hard labels (character spans). Only items whose values are
real log-probabilities count. Many models store raw logits instead; a model is kept when >= 90% of its items
have every value <= 0 AND its median token value is >= -3 (a model reading its own sampled text gives most
tokens high probability; negative logits like Falcon's sit around -8). Items with mismatched token/value
lists or any positive value are dropped. Which models were kept or excluded, and why, is printed.

Scores per token (higher = more suspicious), AUROC against "token overlaps a hard-label span":
  random, weight only (digits/names/identifiers, no logprobs), -logprob, -logprob x weight (ours).
Span IoU (character level, mean over items; both empty counts 1): predicted spans = the low spans the shipped
code reports once a model is warm: each item's placed tokens become a token stream, `analyze` gives the statistics
the detector learns from it (merged per model over all items) and, under the detector's own relative token
threshold (`LowConfidenceDetector._thresholds`, z = `relative.token_z`), the low spans. Beside them the trivial
baselines "whole output" and "nothing".

    .venv/bin/python bench/eval_logprobs.py [--data DIR/Mu-SHROOM]
"""

from __future__ import annotations

import argparse
import glob
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from data import data_dir  # bench/ is on sys.path when a bench script runs

from detectors.low_confidence import LowConfidenceDetector
from guardrails.detector import Services
from guardrails.logprobs import Aligned, Unit, analyze
from guardrails.logprobs.tokens import TokenStream
from guardrails.logprobs.weights import token_weights
from guardrails.model_stats import InMemoryModelStats, ModelStats, Moments

DEFAULT_DATA = data_dir() / "Mu-SHROOM"
Z_VALUES = (2.5, 1.0, 0.5)


def _byte_decoder() -> dict[str, int]:
    """GPT-2 byte-level BPE writes each byte as a printable character ("Ġ" is a space); invert that map."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(
        range(ord("®"), ord("ÿ") + 1))
    chars = printable[:]
    n = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


BYTE_DECODER = _byte_decoder()


def surface(token: str, byte_level: bool) -> str:
    if byte_level and all(ch in BYTE_DECODER for ch in token):
        return bytes(BYTE_DECODER[ch] for ch in token).decode("utf-8", "replace")
    return token.replace("▁", " ")


@dataclass
class Item:
    model: str
    text: str
    tokens: list[str]
    spans: list[tuple[int, int]]  # char span of each token in text ((-1, -1) when not found)
    logprobs: np.ndarray
    gold: list[tuple[int, int]]


def load(data: Path) -> tuple[list[Item], list[tuple[str, int, int, str]]]:
    raw: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(glob.glob(str(data / "splits" / "*" / "*" / "*.extra.jsonl"))):
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                raw[record["model_id"]].append(record)
    items: list[Item] = []
    report: list[tuple[str, int, int, str]] = []
    for model, records in sorted(raw.items()):
        usable = []
        for r in records:
            try:
                values = [float(v) for v in r["model_output_logits"]]
            except (TypeError, ValueError):
                continue
            if len(values) == len(r["model_output_tokens"]) and values:
                usable.append((r, values))
        nonpositive = [(r, v) for r, v in usable if max(v) <= 0.0]
        share = len(nonpositive) / len(records)
        median = statistics.median(x for _, v in nonpositive for x in v) if nonpositive else float("nan")
        if share < 0.9:
            report.append((model, len(records), 0, f"raw logits: only {share:.0%} of items are all <= 0"))
            continue
        if median < -3.0:
            report.append((model, len(records), 0, f"raw logits: all <= 0 but median {median:.1f}"))
            continue
        kept = [_item(model, r, v) for r, v in nonpositive]
        items.extend(kept)
        report.append((model, len(records), len(kept), f"log-probabilities (median {median:.2f})"))
    return items, report


def _item(model: str, record: dict, values: list[float]) -> Item:
    text = record["model_output_text"]
    tokens = record["model_output_tokens"]
    byte_level = any(ch in "ĠĊ" for t in tokens for ch in t)
    spans, cursor = [], 0
    for token in tokens:
        piece = surface(token, byte_level).strip()
        at = text.find(piece, cursor) if piece else -1
        if at < 0 or at - cursor > 8:  # special tokens and anything we cannot place
            spans.append((-1, -1))
            continue
        spans.append((at, at + len(piece)))
        cursor = at + len(piece)
    gold = [(int(a), int(b)) for a, b in record["hard_labels"]]
    return Item(model, text, [surface(t, byte_level) for t in tokens], spans, np.array(values), gold)


def auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Mann-Whitney AUROC with average ranks for ties."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    average = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(average, counts)
    positives = labels.sum()
    negatives = len(labels) - positives
    return float((ranks[labels].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def char_iou(pred: list[tuple[int, int]], gold: list[tuple[int, int]]) -> float:
    p = {c for a, b in pred for c in range(a, b)}
    g = {c for a, b in gold for c in range(a, b)}
    return 1.0 if not p and not g else len(p & g) / len(p | g)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    args = parser.parse_args()
    items, report = load(args.data)
    print("models (items total, items kept, values):")
    for model, total, kept, why in report:
        print(f"  {'+' if kept else '-'} {model:50s} {total:4d} {kept:4d}  {why}")
    rng = np.random.default_rng(0)
    scores: dict[str, list[np.ndarray]] = defaultdict(list)
    labels: list[np.ndarray] = []
    for item in items:
        placed = np.array([s[0] >= 0 for s in item.spans])
        inside = np.array([any(a < ge and gs < b for gs, ge in item.gold) for a, b in item.spans])
        weights = token_weights(tuple(item.tokens))
        labels.append(inside[placed])
        scores["random"].append(rng.random(int(placed.sum())))
        scores["weight only"].append(weights[placed])
        scores["-logprob"].append(-item.logprobs[placed])
        scores["-logprob x weight (ours)"].append((-item.logprobs * weights)[placed])
    y = np.concatenate(labels)
    aligned = [_aligned(item) for item in items]
    learned: dict[str, Moments] = defaultdict(Moments)
    for item, one in zip(items, aligned, strict=True):  # what the detector learns, merged per model
        learned[item.model] = learned[item.model].merge(analyze([one], False, 0.0).tokens)
    detectors = {z: _detector(z) for z in Z_VALUES}
    ious: dict[str, list[float]] = defaultdict(list)
    for item, one in zip(items, aligned, strict=True):
        ious["whole output"].append(char_iou([(0, len(item.text))], item.gold))
        ious["nothing"].append(char_iou([], item.gold))
        for z, det in detectors.items():
            threshold = det._thresholds(ModelStats(learned[item.model], Moments())).token
            (report,) = analyze([one], False, threshold).reports
            ious[f"low-confidence spans z={z}"].append(char_iou(report.signals.low_spans, item.gold))
    print(f"\n{len(items)} items, {len(y)} tokens, {y.mean():.1%} inside a hallucinated span\n")
    print(f"{'method':34s} {'token AUROC':>11s}   {'method':34s} {'span IoU':>8s}")
    left = [(name, auroc(np.concatenate(v), y)) for name, v in scores.items()]
    right = [(name, float(np.mean(v))) for name, v in ious.items()]
    for i in range(max(len(left), len(right))):
        a = f"{left[i][0]:34s} {left[i][1]:11.3f}" if i < len(left) else " " * 46
        b = f"{right[i][0]:34s} {right[i][1]:8.3f}" if i < len(right) else ""
        print(f"{a}   {b}")


def _aligned(item: Item) -> Aligned:
    """The item's placed tokens as one token stream over its text, with one unit covering them all."""
    placed = [i for i, span in enumerate(item.spans) if span[0] >= 0]
    starts = np.array([item.spans[i][0] for i in placed], dtype=np.int64)
    ends = np.array([item.spans[i][1] for i in placed], dtype=np.int64)
    stream = TokenStream(item.text, starts, ends, item.logprobs[placed], np.full((len(placed), 0), np.nan),
                         tuple(item.tokens[i] for i in placed))
    unit = Unit("segment", None, 0, len(placed), 0, len(item.text), 0, len(item.text))  # type: ignore[arg-type]
    return Aligned(stream, [unit], "response")


def _detector(z: float) -> LowConfidenceDetector:
    """The detector whose relative token threshold the spans are judged under (warm from the first token)."""
    services = Services(extra={"model_stats": InMemoryModelStats()})
    return LowConfidenceDetector({"relative": {"min_tokens": 1, "token_z": z}}, services)


if __name__ == "__main__":
    main()
