"""Scorers: the six LongBench metric families (LongBench's definitions; docs/ALGORITHM.md 2.10) and the
InfiniteBench retrieval scorers (B10 there). Each takes (prediction, ground truth) and returns a float in [0, 1]."""

from __future__ import annotations

import re
import string
from collections import Counter

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_ZH_PUNCT = "！？｡。＂＃＄％＆＇（）＊＋，－／：；＜＝＞＠［＼］＾＿｀｛｜｝～｟｠｢｣､、〃》「」『』【】〔〕〖〗〘〙〚〛〜〝〞〟〰〾〿–—‘’‛“”„‟…‧﹏."  # noqa: E501


def normalize_answer(s: str) -> str:
    """Lower case, drop punctuation, drop the articles a/an/the, collapse whitespace (SQuAD/LongBench)."""
    s = "".join(ch for ch in s.lower() if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", s).split())


def normalize_zh_answer(s: str) -> str:
    """Lower case, drop English and Chinese punctuation and all whitespace."""
    drop = set(string.punctuation + _ZH_PUNCT)
    return "".join(ch for ch in s.lower() if ch not in drop and not ch.isspace())


def _f1(pred_tokens: list[str], gold_tokens: list[str]) -> float:
    common = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred_tokens), common / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def qa_f1(prediction: str, ground_truth: str, **_) -> float:
    """Token F1 after `normalize_answer`."""
    return _f1(normalize_answer(prediction).split(), normalize_answer(ground_truth).split())


def qa_f1_zh(prediction: str, ground_truth: str, **_) -> float:
    """Token F1 over jieba words after `normalize_zh_answer`."""
    import jieba

    pred = [normalize_zh_answer(t) for t in jieba.cut(prediction, cut_all=False)]
    gold = [normalize_zh_answer(t) for t in jieba.cut(ground_truth, cut_all=False)]
    return _f1([t for t in pred if t], [t for t in gold if t])


def rouge_l(prediction: str, ground_truth: str, **_) -> float:
    """ROUGE-L F of the `rouge` package (what LongBench uses); 0 when it cannot score (e.g. empty text)."""
    from rouge import Rouge

    try:
        return float(Rouge().get_scores([prediction], [ground_truth], avg=True)["rouge-l"]["f"])
    except (ValueError, RecursionError, LookupError):
        return 0.0


def rouge_l_zh(prediction: str, ground_truth: str, **_) -> float:
    """ROUGE-L F over jieba words."""
    import jieba

    return rouge_l(" ".join(jieba.cut(prediction, cut_all=False)), " ".join(jieba.cut(ground_truth, cut_all=False)))


def classification(prediction: str, ground_truth: str, all_classes: list[str] = (), **_) -> float:
    """1/(number of matched classes) if the ground truth is among the classes named in the prediction; a class that
    is a substring of the ground truth (but not equal to it) does not count as a match."""
    matched = [c for c in all_classes if c in prediction]
    matched = [c for c in matched if not (c in ground_truth and c != ground_truth)]
    return 1.0 / len(matched) if ground_truth in matched else 0.0


def retrieval(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the paragraph number of "Paragraph N"."""
    target = re.findall(r"Paragraph (\d+)", ground_truth)[0]
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def retrieval_zh(prediction: str, ground_truth: str, **_) -> float:
    """Chinese variant: the paragraph is named "段落N"."""
    target = re.findall(r"段落(\d+)", ground_truth)[0]
    numbers = re.findall(r"\d+", prediction)
    return sum(n == target for n in numbers) / len(numbers) if numbers else 0.0


def count(prediction: str, ground_truth: str, **_) -> float:
    """Share of the numbers in the prediction that equal the ground-truth count."""
    numbers = re.findall(r"\d+", prediction)
    return sum(n == str(ground_truth) for n in numbers) / len(numbers) if numbers else 0.0


def code_sim(prediction: str, ground_truth: str, **_) -> float:
    """fuzzywuzzy ratio / 100 between the ground truth and the first prediction line that is code (no `, # or //)."""
    from fuzzywuzzy import fuzz

    lines = [line for line in prediction.lstrip("\n").split("\n") if not any(m in line for m in ("`", "#", "//"))]
    return fuzz.ratio(lines[0] if lines else "", ground_truth) / 100


def first_integer(prediction: str, ground_truth: str, **_) -> float:
    """InfiniteBench passkey / number_string: the first integer in the prediction equals the label."""
    found = re.search(r"\d+", prediction)
    return float(found is not None and found.group() == str(ground_truth).strip())


def word_match(prediction: str, ground_truth: str, **_) -> float:
    """InfiniteBench kv_retrieval: the label appears as a word, splitting on whitespace and punctuation."""
    words = re.split(r"[\s\"'.,:;!?()\[\]{}<>]+", prediction)
    return float(str(ground_truth) in words)


def contains(prediction: str, ground_truth: str, **_) -> float:
    """Needle-in-a-haystack: the expected phrase occurs in the prediction (case-insensitive)."""
    return float(ground_truth.lower() in prediction.lower())


METRICS = {
    "qa_f1": qa_f1,
    "qa_f1_zh": qa_f1_zh,
    "rouge": rouge_l,
    "rouge_zh": rouge_l_zh,
    "classification": classification,
    "retrieval": retrieval,
    "retrieval_zh": retrieval_zh,
    "count": count,
    "code_sim": code_sim,
    "first_integer": first_integer,
    "word_match": word_match,
    "contains": contains,
}

# LongBench dataset -> metric (LongBench's eval.py mapping); the first-line rule applies to FIRST_LINE datasets.
LONGBENCH_METRIC = {
    **dict.fromkeys(
        ["narrativeqa", "qasper", "multifieldqa_en", "hotpotqa", "2wikimqa", "musique", "triviaqa"], "qa_f1"
    ),
    "multifieldqa_zh": "qa_f1_zh",
    **dict.fromkeys(["gov_report", "qmsum", "multi_news", "samsum"], "rouge"),
    **dict.fromkeys(["dureader", "vcsum"], "rouge_zh"),
    **dict.fromkeys(["trec", "lsht"], "classification"),
    "passage_retrieval_en": "retrieval",
    "passage_retrieval_zh": "retrieval_zh",
    "passage_count": "count",
    **dict.fromkeys(["lcc", "repobench-p"], "code_sim"),
}
FIRST_LINE = {"trec", "triviaqa", "samsum", "lsht"}

# the optional modules (the `eval` extra) each metric imports when it scores
METRIC_MODULES = {
    "qa_f1_zh": ("jieba",),
    "rouge": ("rouge",),
    "rouge_zh": ("rouge", "jieba"),
    "code_sim": ("fuzzywuzzy",),
}


def longbench_score(dataset: str, prediction: str, answers: list[str], all_classes: list[str] | None = None) -> float:
    """Max over the reference answers of the dataset's metric, after the first-line rule where it applies."""
    if dataset in FIRST_LINE:
        prediction = prediction.lstrip("\n").split("\n")[0]
    metric = METRICS[LONGBENCH_METRIC[dataset]]
    return max(metric(prediction, a, all_classes=all_classes or []) for a in answers)
