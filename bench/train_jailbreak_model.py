"""Train the learned cue of `jailbreak`: writes detectors/data/jailbreak_ngrams.json.

Data: development halves only, split by the hash of bench/eval_text.py; no held-out row is read.
  positives  jailbreak_llms in-the-wild prompts (MIT; verazuo/jailbreak_llms, shared/data/jailbreak_llms) and
             CyberSecEval 2 direct prompt-injection cases (MIT; meta-llama/PurpleLlama).
  negatives  XSTest prompts, safe and unsafe (CC-BY-4.0; paul-rottger/exaggerated-safety);
             Agent-SafetyBench fulfillable tasks, BIPIA questions, InjecAgent user instructions (MIT);
             CyberSecEval's system prompts (MIT; the evaluation never uses them as user input);
             ordinary persona and task prompts ("I want you to act as a Linux terminal…") from
             awesome-chatgpt-prompts (CC0-1.0; github.com/f/awesome-chatgpt-prompts, prompts.csv at commit
             50a97c07, text prompts only). They are not in shared/data: pass the file with --personas. Their
             dev half is trained on, less the DAN prompt the collection carries; the other half is only
             measured. Without them the model learns "a long prompt that gives the model a role" and flags
             most of them.
  R-Judge (license not verified) and STAR-1 are not used.

Model: logistic regression on the presence of word unigrams and bigrams (detectors.jailbreak_model.ngrams)
found in at least MIN_DF training prompts, scaled by 1/sqrt(n-grams); classes balanced, L2, full-batch
gradient descent (deterministic). The TOP_K n-grams with the largest weights are kept and the model is
refitted on them.

Run: .venv/bin/python bench/train_jailbreak_model.py --personas /path/to/awesome-chatgpt-prompts/prompts.csv
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import re
import sys
from collections import Counter
from pathlib import Path

import numpy as np
from eval_text import DATA, benign_user_prompts, half, jailbreak_positives, segment, xstest  # bench/ on sys.path

from detectors.jailbreak import JailbreakDetector
from detectors.jailbreak_model import MODEL_FILE, ngrams
from guardrails.exchange import SegmentKind, Trust

MAX_TOKENS, MIN_DF, TOP_K = 1500, 5, 4000
EPOCHS, LEARNING_RATE, L2 = 1500, 4.0, 1e-4
NOT_ORDINARY = re.compile(r"\bDAN\b|do anything now|jailbr", re.IGNORECASE)  # jailbreaks inside the persona list


def persona_prompts(path: Path) -> list[tuple[str, str]]:
    csv.field_size_limit(1 << 26)
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.DictReader(f) if r.get("type", "TEXT") in ("", "TEXT")]
    texts = [r["prompt"] for r in rows if not NOT_ORDINARY.search(r["act"] + " " + r["prompt"])]
    return [(half(t), t) for t in dict.fromkeys(texts)]


def training_set(personas: Path) -> tuple[list[str], list[str]]:
    wild, direct = jailbreak_positives()
    cse = json.loads((DATA / "CyberSecEval-prompt-injection/CybersecurityBenchmarks/datasets/prompt_injection/"
                      "prompt_injection.json").read_text())
    negatives = [(half(r["prompt"]), r["prompt"]) for label in ("safe", "unsafe") for r in xstest(label)]
    negatives += benign_user_prompts(with_rjudge=False) + persona_prompts(personas)
    negatives += [("dev", t) for t in dict.fromkeys(c["test_case_prompt"] for c in cse)]
    dev = lambda cases: list(dict.fromkeys(t for split, t in cases if split == "dev"))  # noqa: E731
    return dev(wild + direct), dev(negatives)


class Features:
    """Sparse rows of the n-gram presence matrix, as (row, column, value) triples."""

    def __init__(self, texts: list[str], vocabulary: dict[str, int]) -> None:
        grams = [ngrams(t, MAX_TOKENS) for t in texts]
        columns = [[vocabulary[g] for g in gs if g in vocabulary] for gs in grams]
        self.rows = len(texts)
        self.width = len(vocabulary)
        self.row = np.repeat(np.arange(self.rows), [len(c) for c in columns])
        self.column = np.array([c for cs in columns for c in cs], dtype=np.int64)
        self.value = np.concatenate([np.full(len(c), 1 / math.sqrt(max(1, len(g)))) for c, g in zip(columns, grams,
                                                                                                        strict=True)])

    def times(self, w: np.ndarray) -> np.ndarray:
        return np.bincount(self.row, weights=self.value * w[self.column], minlength=self.rows)

    def transposed_times(self, g: np.ndarray) -> np.ndarray:
        return np.bincount(self.column, weights=self.value * g[self.row], minlength=self.width)


def fit(positives: list[str], negatives: list[str], vocabulary: dict[str, int]) -> tuple[np.ndarray, float]:
    x = Features(positives + negatives, vocabulary)
    y = np.r_[np.ones(len(positives)), np.zeros(len(negatives))]
    sample_weight = np.where(y == 1, len(negatives) / len(positives), 1.0)
    sample_weight /= sample_weight.mean()
    w, b = np.zeros(x.width), 0.0
    for _ in range(EPOCHS):
        p = 1 / (1 + np.exp(-(x.times(w) + b)))
        gradient = (p - y) * sample_weight
        w -= LEARNING_RATE * (x.transposed_times(gradient) / len(y) + L2 * w)
        b -= LEARNING_RATE * gradient.mean()
    return w, b


def train(positives: list[str], negatives: list[str]) -> tuple[dict[str, float], float]:
    document_frequency = Counter(g for t in positives + negatives for g in ngrams(t, MAX_TOKENS))
    vocabulary = {g: i for i, g in enumerate(sorted(g for g, n in document_frequency.items() if n >= MIN_DF))}
    w, _ = fit(positives, negatives, vocabulary)
    by_index = sorted(vocabulary, key=vocabulary.__getitem__)
    kept = sorted(by_index[i] for i in np.argsort(-np.abs(w))[:TOP_K])
    vocabulary = {g: i for i, g in enumerate(kept)}
    w, b = fit(positives, negatives, vocabulary)
    return {g: round(float(w[i]), 4) for g, i in vocabulary.items()}, round(float(b), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--personas", type=Path, required=True, help="awesome-chatgpt-prompts prompts.csv")
    parser.add_argument("--out", type=Path, default=MODEL_FILE)
    args = parser.parse_args()
    positives, negatives = training_set(args.personas)
    weights, bias = train(positives, negatives)
    args.out.write_text(json.dumps({
        "about": "jailbreak learned cue: logistic regression on word unigram/bigram presence, written by "
                 "bench/train_jailbreak_model.py",
        "sources": ["jailbreak_llms (MIT)", "CyberSecEval 2 prompt injection (MIT)", "XSTest (CC-BY-4.0)",
                    "Agent-SafetyBench, BIPIA, InjecAgent (MIT)", "awesome-chatgpt-prompts (CC0-1.0)"],
        "max_tokens": MAX_TOKENS, "bias": bias, "weights": dict(sorted(weights.items())),
    }, ensure_ascii=False, indent=0) + "\n", encoding="utf-8")
    print(f"trained on {len(positives)} jailbreak and {len(negatives)} ordinary prompts (dev halves); "
          f"{len(weights)} n-grams -> {args.out}")
    # the held-out half of the persona prompts is the check that ordinary role prompts stay unflagged
    detector = JailbreakDetector({"model_file": str(args.out)})
    held_out = [t for split, t in persona_prompts(args.personas) if split == "held-out"]
    flagged = sum(bool(detector.analyze(segment(SegmentKind.USER, t, Trust.TRUSTED))) for t in held_out)
    print(f"jailbreak flags {flagged}/{len(held_out)} = {flagged / len(held_out):.3f} of the held-out persona prompts")


if __name__ == "__main__":
    sys.exit(main())
