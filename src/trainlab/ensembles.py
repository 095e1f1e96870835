"""Model ensembles: train several models, average their predictions — the lectures' "+2%".

::

    result = trainlab.ensemble(["runs/a", "runs/b", "runs/c"])      # or a --seeds run folder
    result["ensemble"]["test_accuracy"], result["members"][0]["test_accuracy"]

Members are run folders loaded with `trainlab.train.api.load_run` (their raw, EMA,
best or SWA weights), the last K checkpoints of one run, or the snapshots of one run's
cyclic schedule. Each member and the ensemble are scored on the same test examples:

- **combine** — ``"mean-prob"``: p̄(c|x) = (1/M) Σₘ softmax(zₘ(x))_c, predict argmax_c p̄;
  ``"vote"``: the class most members predict, a tie going to the tied class with the
  highest p̄ (``COMBINERS`` is the registry).
- **loss** — the negative log-likelihood of p̄, −(1/N) Σᵢ log p̄(yᵢ|xᵢ), for both combiners
  (votes have no probabilities of their own); for one member it is its cross-entropy.
- **ECE** — expected calibration error over 15 equal-width confidence bins
  Bₖ = ((k−1)/15, k/15]: Σₖ |Bₖ|/N · |acc(Bₖ) − conf(Bₖ)|, the confidence of a prediction
  being p̄ of the predicted class (Guo et al. 2017).

**Same data.** Members are compared on their test split, and an average of predictions
means something only on the same examples: members must have identical *raw* test
examples and labels, in the same order (checked by SHA-256 of the un-normalized tensors).
Each member sees them normalized with its own training statistics, as in its training.
On a dataset with a fixed test split (MNIST-1D, MNIST, CIFAR-10, an npz with ``x_test``)
members may differ in ``run.seed``, validation fraction, normalization, model, optimizer…;
on one without (digits, CSV, an npz without ``x_test``) ``run.seed`` also carves the test
set, so members must share it and the data settings.

This module is ``ensembles.py``, not ``ensemble.py``: importing a submodule binds its name
in the package, which would shadow the function ``trainlab.ensemble``.

References: Dietterich 2000, "Ensemble methods in machine learning"; Huang et al. 2017,
"Snapshot ensembles"; Guo et al. 2017, "On calibration of modern neural networks".
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from . import data as data_lib
from .train.api import WEIGHTS, Run, load_run
from .train.build import prepared_data
from .train.checkpoint import list_checkpoints, load_checkpoint, load_weights_file
from .train.config import Config
from .train.run_folder import check_is_run
from .train.runs import read_seeds
from .train.sources import EVAL_BATCH
from .train.trainer import SNAPSHOTS_DIR, SUMMARY_FILE

ECE_BINS = 15
"""Equal-width confidence bins of the expected calibration error (the default of
`expected_calibration_error`).
"""


class EnsembleError(ValueError):
    """Members that cannot be ensembled; the message names them, the cause and the fix."""


# --- the math: log-probabilities [M members, N examples, C classes] → predictions, metrics ----


def mean_log_probs(log_probs: Tensor) -> Tensor:
    """log p̄ = log((1/M) Σₘ pₘ) of members' log-probabilities [M, N, C], computed stably."""
    return torch.logsumexp(log_probs, dim=0) - math.log(log_probs.shape[0])


def mean_prob(log_probs: Tensor) -> Tensor:
    """Predictions argmax_c p̄(c|x) of the averaged probabilities."""
    return mean_log_probs(log_probs).argmax(-1)


def vote(log_probs: Tensor) -> Tensor:
    """Predictions by majority of the members' argmax; a tie goes to the highest p̄."""
    votes = F.one_hot(log_probs.argmax(-1), log_probs.shape[-1]).sum(0)  # [N, C]
    tied = votes == votes.max(-1, keepdim=True).values
    return mean_log_probs(log_probs).masked_fill(~tied, -math.inf).argmax(-1)


COMBINERS: dict[str, Callable[[Tensor], Tensor]] = {"mean-prob": mean_prob, "vote": vote}
"""How members' predictions are combined, by name: log-probabilities [M, N, C] → classes
[N]. ``"mean-prob"`` takes the argmax of the averaged probabilities (`mean_prob`),
``"vote"`` the majority of the members' argmax (`vote`).
"""


def expected_calibration_error(confidence: Tensor, correct: Tensor, bins: int = ECE_BINS) -> float:
    """ECE = Σₖ |Bₖ|/N · |acc(Bₖ) − conf(Bₖ)| over equal-width bins Bₖ = ((k−1)/b, k/b].

    |Bₖ|·(acc(Bₖ) − conf(Bₖ)) is Σ_{i∈Bₖ} (correctᵢ − confidenceᵢ), so each bin needs two sums.
    """
    index = (confidence.double() * bins).ceil().long().clamp(1, bins) - 1
    gap = torch.zeros(bins, dtype=torch.float64)
    gap.index_add_(0, index, correct.double() - confidence.double())
    return float(gap.abs().sum() / len(confidence))


def score(log_probs: Tensor, y: Tensor, combine: str = "mean-prob") -> dict[str, float]:
    """Test accuracy, loss (NLL of p̄) and ECE of members' log-probabilities [M, N, C]."""
    log_p = mean_log_probs(log_probs)
    predicted = COMBINERS[combine](log_probs)
    correct = predicted == y
    confidence = log_p.gather(1, predicted[:, None]).squeeze(1).exp()
    return {
        "test_accuracy": float(correct.double().mean()),
        "test_loss": float(-log_p.gather(1, y[:, None]).mean()),
        "test_ece": expected_calibration_error(confidence, correct),
    }


@torch.no_grad()
def log_probabilities(model: nn.Module, x: Tensor) -> Tensor:
    """log softmax of ``model``'s outputs on ``x`` in eval mode, in float64: [N, C]."""
    device = next(model.parameters()).device
    was = model.training
    model.eval()
    try:
        outputs = [
            model(x[i : i + EVAL_BATCH].to(device)).double().cpu()
            for i in range(0, len(x), EVAL_BATCH)
        ]
    finally:
        model.train(was)
    return torch.log_softmax(torch.cat(outputs), dim=1)


# --- members ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Member:
    """One model of an ensemble: where its weights came from and its run."""

    name: str
    model: nn.Module
    run: Run


def ensemble(
    dirs: str | Path | Sequence[str | Path],
    *,
    weights: str = "raw",
    combine: str = "mean-prob",
    data: tuple[Tensor, Tensor] | None = None,
    model: nn.Module | None = None,
    last: int | None = None,
    snapshots: bool = False,
) -> dict[str, Any]:
    """Score each member alone and their ensemble on the same test examples.

    Args:
        dirs: run folders, each a member; a ``--seeds`` run folder counts as its members.
            With ``last`` or ``snapshots``: one run folder.
        weights: each member's ``"raw"``, ``"ema"``, ``"best"`` or ``"swa"`` weights
            (default: ``"raw"``).
        combine: ``"mean-prob"`` or ``"vote"`` (``COMBINERS``; default: ``"mean-prob"``).
        data: ``(x_test, y_test)`` given to every member as is (default: each config run's
            own test split, rebuilt and normalized as in its training). Runs of
            ``trainlab.fit`` on your own data need it.
        model: for runs of ``trainlab.fit``, the architecture (copied for each member).
        last: average the last ``last`` checkpoints of one run (default: None).
        snapshots: average the ``snapshots/cycle-<k>.safetensors`` of one run, saved at the
            end of each cycle of a ``cyclic_cosine`` schedule (default: False).

    Returns:
        ``{"members": [{"dir", "weights", "test_accuracy", "test_loss", "test_ece"}, …],
        "ensemble": {"test_accuracy", "test_loss", "test_ece", "combine", "weights",
        "size", "examples", "gain", "gain_over_best"}}``; ``gain`` is the ensemble's
        accuracy minus the members' mean, ``gain_over_best`` minus the best member's.

    Raises:
        EnsembleError: members of different classes or test examples, a bad option.
    """
    if combine not in COMBINERS:
        raise EnsembleError(f"Invalid combine: {combine!r} (must be one of {', '.join(COMBINERS)})")
    log_probs, y, names = member_log_probs(
        dirs, weights=weights, data=data, model=model, last=last, snapshots=snapshots
    )
    alone = [
        {"dir": name, "weights": weights, **score(lp[None], y)}
        for name, lp in zip(names, log_probs)
    ]
    together = score(log_probs, y, combine)
    accuracies = [m["test_accuracy"] for m in alone]
    together |= {
        "combine": combine,
        "weights": weights,
        "size": len(names),
        "examples": len(y),
        "gain": together["test_accuracy"] - sum(accuracies) / len(accuracies),
        "gain_over_best": together["test_accuracy"] - max(accuracies),
    }
    return {"members": alone, "ensemble": together}


def member_log_probs(
    dirs: str | Path | Sequence[str | Path],
    *,
    weights: str = "raw",
    data: tuple[Tensor, Tensor] | None = None,
    model: nn.Module | None = None,
    last: int | None = None,
    snapshots: bool = False,
) -> tuple[Tensor, Tensor, list[str]]:
    """Each member's log-probabilities on the shared test examples, the labels, the names.

    What [`ensemble`][trainlab.ensembles.ensemble] scores, for scoring many sub-ensembles with one
    pass of each member: ``score(log_probs[:k], y)`` is the ensemble of the first k members. The
    arguments are [`ensemble`][trainlab.ensembles.ensemble]'s.

    Returns:
        ``(log_probs, y, names)``: log pₘ(c|xᵢ) as float64 [M members, N examples,
        C classes] on the CPU, the labels [N] (int64, CPU), and each member's folder or file.

    Raises:
        EnsembleError: members of different classes or test examples, a bad option.
    """
    if weights not in WEIGHTS:
        raise EnsembleError(f"Invalid weights: {weights!r} (must be one of {', '.join(WEIGHTS)})")
    paths = [Path(dirs)] if isinstance(dirs, (str, Path)) else [Path(d) for d in dirs]
    if not paths:
        raise EnsembleError("Invalid dirs: none given (pass the run folders to ensemble)")
    if last is not None or snapshots:
        members = _saved_along_one_run(paths, weights, model, last, snapshots)
    else:
        members = [_member(path, weights, model) for path in _expand(paths)]
    _check_same_loss(members)
    _check_distinct_weights(members)
    x_tests, y = _test_examples(members, data)
    each = [log_probabilities(m.model, x) for m, x in zip(members, x_tests)]
    for member, lp in zip(members[1:], each[1:]):
        if lp.shape != each[0].shape:
            raise EnsembleError(
                f"Invalid ensemble: {members[0].name} gives outputs of shape "
                f"{tuple(each[0].shape)} on the test examples and {member.name} "
                f"{tuple(lp.shape)} (members must predict the same classes)"
            )
    log_probs = torch.stack(each)
    _check_labels(y, log_probs.shape[-1])
    return log_probs, y, [m.name for m in members]


def _expand(paths: list[Path]) -> list[Path]:
    """The member folders: each path, or the members of a seeds run; each once."""
    expanded: list[Path] = []
    for path in paths:
        seeds = read_seeds(path) if path.is_dir() else None
        if seeds is None:
            expanded.append(path)
            continue
        for member in seeds.members:
            if not (member / SUMMARY_FILE).is_file():
                raise EnsembleError(
                    f"Invalid member: {member} of the seeds run {path} has not finished (no "
                    f"{SUMMARY_FILE}; continue it with `trainlab train --resume {path}`)"
                )
            expanded.append(member)
    seen: dict[Path, Path] = {}
    for path in expanded:
        if path.resolve() in seen:
            raise EnsembleError(
                f"Invalid dirs: {path} is given twice (as {seen[path.resolve()]}); an ensemble "
                "takes each member once"
            )
        seen[path.resolve()] = path
    return expanded


def _load(path: Path, weights: str, model: nn.Module | None) -> Run:
    run = load_run(path, weights=weights, model=copy.deepcopy(model))
    if run.about.get("task", "classification") != "classification":
        raise EnsembleError(
            f"Invalid member: {path} is a {run.about.get('task')} run (an ensemble here "
            "averages class probabilities: pass classification runs)"
        )
    if run.model is None:
        raise EnsembleError(
            f"Invalid member: {path} was trained with trainlab.fit on your own model, which "
            "its folder cannot rebuild (pass the architecture: trainlab.ensemble(dirs, "
            "model=YourNet(), data=(x_test, y_test)))"
        )
    return run


def _member(path: Path, weights: str, model: nn.Module | None) -> Member:
    check_is_run("member", path)
    if not (path / SUMMARY_FILE).is_file():  # before loading any weights
        raise EnsembleError(
            f"Invalid member: {path} has not finished training (no {SUMMARY_FILE}; finish it "
            f"with `trainlab train --resume {path}`, or average its checkpoints with --last K)"
        )
    run = _load(path, weights, model)
    return Member(str(path), run.model, run)


def _saved_along_one_run(
    paths: list[Path], weights: str, model: nn.Module | None, last: int | None, snapshots: bool
) -> list[Member]:
    """Members from the weights one run saved: its last checkpoints or its snapshots."""
    option = "--snapshots" if snapshots else "--last"
    if last is not None and snapshots:
        raise EnsembleError(
            "Invalid options: --last and --snapshots together (choose one: the last K "
            "checkpoints of a run, or the snapshots of its cyclic schedule)"
        )
    if len(paths) != 1 or (paths[0].is_dir() and read_seeds(paths[0]) is not None):
        shown = ", ".join(str(p) for p in paths)
        raise EnsembleError(
            f"Invalid DIR: {shown} ({option} averages the weights saved along one run: pass "
            "one run folder)"
        )
    if weights != "raw":
        raise EnsembleError(
            f"Invalid weights: {weights!r} with {option} (checkpoints and snapshots hold the "
            "raw weights: leave weights 'raw')"
        )
    path = paths[0]
    run = _load(path, "raw", model)
    if snapshots:
        sources = _snapshot_files(path)
    else:
        sources = _last_checkpoints(path, run, last)  # type: ignore[arg-type]
    members = []
    for name, load in sources:
        member = copy.deepcopy(run.model)
        try:
            member.load_state_dict(load())
        except RuntimeError as error:  # missing, unexpected or mis-shaped tensors
            first = str(error).strip().splitlines()[-1].strip()
            raise EnsembleError(
                f"Invalid {option}: {name} does not fit the model of {path} ({first}); it was "
                f"saved by another model or config (remove it, or train the run again to "
                "save weights of its own model)"
            ) from None
        members.append(Member(name, member, run))
    return members


def _last_checkpoints(path: Path, run: Run, last: int) -> list[tuple[str, Callable[[], Any]]]:
    if isinstance(last, bool) or not isinstance(last, int) or last < 1:
        raise EnsembleError(f"Invalid --last: {last!r} (must be an integer >= 1)")
    checkpoints = list_checkpoints(path)
    if last > len(checkpoints):
        keep_last = _setting(run.config, "run", "keep_last")
        raise EnsembleError(
            f"Invalid --last: {last}, but {path} keeps {len(checkpoints)} checkpoints "
            f"(run.keep_last = {keep_last}, plus the best by run.keep_best_by; a checkpoint "
            "is skipped while the last is younger than run.checkpoint_seconds; train with a "
            f"larger run.keep_last or a smaller run.checkpoint_seconds to average more, or "
            f"pass --last {len(checkpoints)})"
        )
    return [(str(p), lambda p=p: load_checkpoint(p).weights) for p in checkpoints[-last:]]


def _snapshot_files(path: Path) -> list[tuple[str, Callable[[], Any]]]:
    files = []
    for file in (path / SNAPSHOTS_DIR).glob("cycle-*.safetensors"):
        number = file.name[len("cycle-") : -len(".safetensors")]
        if number.isdigit():
            files.append((int(number), file))
    if not files:
        raise EnsembleError(
            f"Invalid --snapshots: {path} has no {SNAPSHOTS_DIR}/cycle-<k>.safetensors (a "
            "snapshot ensemble needs a run trained with averaging.snapshots = true and a "
            "cyclic_cosine phase in schedule.phases, which saves the weights at the end of "
            "every cycle)"
        )
    return [(str(f), lambda f=f: load_weights_file(f)) for _, f in sorted(files)]


def _setting(config: Any, section: str, key: str) -> Any:
    """A setting of a config run (a Config) or of a trainlab.fit run (its TOML as a dict)."""
    if isinstance(config, Config):
        return getattr(getattr(config, section), key)
    return config.get(section, {}).get(key, "its default")


def _loss_name(run: Run) -> str:
    """The loss a member's run trained with: its config's loss.name, or what trainlab.fit
    recorded (a name of ``LOSSES``, or a callable's ``__name__``)."""
    if isinstance(run.config, Config):
        return run.config.loss.name
    return str(run.about.get("loss", "cross_entropy"))


def _check_same_loss(members: list[Member]) -> None:
    """Members trained with one loss: their outputs are averaged as logits of one meaning.

    Cross-entropy trains logits whose softmax is a probability; squared, Huber or absolute
    error fit the outputs to one-hot targets, where softmax gives other, flatter numbers.
    """
    first, loss = members[0], _loss_name(members[0].run)
    for member in members[1:]:
        other = _loss_name(member.run)
        if other != loss:
            raise EnsembleError(
                f"Invalid ensemble: {first.name} was trained with loss.name {loss!r} and "
                f"{member.name} with {other!r} (their outputs mean different things, so their "
                "softmax probabilities cannot be averaged: ensemble runs trained with the same "
                "loss)"
            )


def _weights_digest(model: nn.Module) -> str:
    """SHA-256 of a model's state dict: each tensor's name, dtype, shape and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name} {tensor.dtype} {tuple(tensor.shape)}".encode())
        flat = tensor.detach().cpu().contiguous().reshape(-1)
        digest.update(flat.view(torch.uint8).numpy().tobytes())  # any dtype, bfloat16 too
    return digest.hexdigest()


def _check_distinct_weights(members: list[Member]) -> None:
    """No member twice: a copy of one would count its predictions twice, not add a model."""
    seen: dict[str, Member] = {}
    for member in members:
        digest = _weights_digest(member.model)
        if digest in seen:
            raise EnsembleError(
                f"Invalid ensemble: {member.name} has the same weights as {seen[digest].name} "
                f"(SHA-256 {digest[:12]}…: a copy of a run, or a run trained again with the "
                "same settings and run.seed, counts one model twice: pass each trained model "
                "once)"
            )
        seen[digest] = member


# --- the test examples, the same for every member ---------------------------------------------


def _test_examples(
    members: list[Member], data: tuple[Tensor, Tensor] | None
) -> tuple[list[Tensor], Tensor]:
    """Each member's test inputs and the one set of labels; members checked compatible."""
    first = members[0]
    for member in members[1:]:
        classes, other = first.run.about.get("classes"), member.run.about.get("classes")
        if classes != other:
            raise EnsembleError(
                f"Invalid ensemble: {first.name} predicts {classes} classes and {member.name} "
                f"{other} (members must be trained for the same classes)"
            )
    if data is not None:
        x, y = _checked_data(data)
        return [x] * len(members), y
    splits: dict[str, tuple[Tensor, Tensor, str]] = {}  # by data settings: members may share
    tests = []
    for member in members:
        if member.run.about.get("source") == "python":
            raise EnsembleError(
                f"Invalid member: {member.name} was trained with trainlab.fit on your own data, "
                "which its folder cannot rebuild (in Python pass the test data: "
                "trainlab.ensemble(dirs, model=..., data=(x_test, y_test)))"
            )
        key = _data_key(member.run.config)
        if key not in splits:
            splits[key] = held_out_split(member.run.config)
        tests.append(splits[key])
    for member, test in zip(members[1:], tests[1:]):
        if test[2] != tests[0][2]:
            raise EnsembleError(
                f"Invalid ensemble: {first.name} and {member.name} are tested on different "
                f"examples ({_data_difference(first.run.config, member.run.config)}), so their "
                "predictions cannot be averaged on one test set (ensemble runs whose test split "
                "is the same: the same data.name and data.options and, for a dataset without a "
                "fixed test split, the same run.seed, data.val_fraction, data.test_fraction and "
                "data.stratify)"
            )
    return [x for x, _, _ in tests], tests[0][1]


def _data_key(config: Config) -> str:
    """What a config's prepared splits depend on: its [data] settings and run.seed."""
    return json.dumps([config.to_dict()["data"], config.run.seed], sort_keys=True, default=str)


def held_out_split(config: Config) -> tuple[Tensor, Tensor, str]:
    """A config run's test split ``(x, y)`` as its model sees it (normalized with its training
    statistics), and the SHA-256 of the raw, un-normalized examples and labels.

    The data are loaded and split once; the normalization is the one training applies
    (``data.normalize`` fitted on the training split).
    """
    raw = dataclasses.replace(config, data=dataclasses.replace(config.data, normalize="none"))
    splits = prepared_data(raw)
    x, y = splits["test"]
    digest = hashlib.sha256()
    for tensor in (x, y):
        digest.update(f"{tensor.dtype} {tuple(tensor.shape)}".encode())
        digest.update(tensor.contiguous().numpy().tobytes())
    if config.data.normalize != "none":
        x = data_lib.Normalizer(config.data.normalize).fit(splits["train"][0])(x)
    return x, y, digest.hexdigest()


def _data_difference(a: Config, b: Config) -> str:
    """The data settings in which two configs differ, in words."""
    keys = ("data.name", "data.options", "data.val_fraction", "data.test_fraction")
    differ = []
    for key in (*keys, "data.stratify", "run.seed"):
        section, name = key.split(".")
        left, right = getattr(getattr(a, section), name), getattr(getattr(b, section), name)
        if left != right:
            differ.append(f"{key} {left!r} vs {right!r}")
    if not differ:
        return "with the same data settings: the data files changed since one of them trained"
    note = ""
    if [d.split()[0] for d in differ] == ["run.seed"]:
        note = f"; {a.data.name!r} has no fixed test split, so run.seed also carves the test set"
    return ", ".join(differ) + note


def _checked_data(data: Any) -> tuple[Tensor, Tensor]:
    """The user's ``(x_test, y_test)``; the labels as int64 on the CPU, where scoring runs."""
    if not (isinstance(data, (tuple, list)) and len(data) == 2):
        raise EnsembleError(
            f"Invalid data: a {type(data).__name__} (must be an (x_test, y_test) pair of tensors)"
        )
    x, y = data
    if not (isinstance(x, Tensor) and isinstance(y, Tensor)) or len(x) != len(y) or not len(y):
        raise EnsembleError(
            "Invalid data: x and y must be tensors with the same, non-zero number of rows"
        )
    if y.is_floating_point() or y.is_complex() or y.dtype == torch.bool or y.dim() != 1:
        raise EnsembleError(
            f"Invalid data: labels of dtype {y.dtype} and shape {tuple(y.shape)} (must be "
            "integer class labels, one per example: y.long())"
        )
    return x, y.cpu().long()


def _check_labels(y: Tensor, classes: int) -> None:
    """Labels within the ``classes`` outputs the members give (the width of their logits)."""
    low, high = int(y.min()), int(y.max())
    if low < 0 or high >= classes:
        raise EnsembleError(
            f"Invalid data: labels from {low} to {high}, but the members predict {classes} "
            f"classes (labels must be 0..{classes - 1})"
        )


# --- what a person reads ------------------------------------------------------------------------


def format_table(result: dict[str, Any]) -> str:
    """Each member and the ensemble: accuracy, loss, ECE; the gain in points."""
    together = result["ensemble"]
    names = [m["dir"] for m in result["members"]]
    label = f"ensemble ({together['combine']})"
    width = max(len(label), *(len(name) for name in names))
    title = (
        f"ensemble of {together['size']} members ({together['weights']} weights, "
        f"{together['combine']}) on {together['examples']:,} test examples"
    )
    rows = [title, f"{'member':<{width}}  {'accuracy':>9} {'loss':>9} {'ECE':>8}"]
    for entry in [*result["members"], {**together, "dir": label}]:
        rows.append(
            f"{entry['dir']:<{width}}  {entry['test_accuracy'] * 100:>8.1f}% "
            f"{entry['test_loss']:>9.4f} {entry['test_ece']:>8.4f}"
        )
    mean = together["test_accuracy"] - together["gain"]
    best = together["test_accuracy"] - together["gain_over_best"]
    rows.append(
        f"gain: {together['gain'] * 100:+.1f} points over the mean member ({mean * 100:.1f}%), "
        f"{together['gain_over_best'] * 100:+.1f} over the best ({best * 100:.1f}%)"
    )
    votes = " (the votes have none of their own)" if together["combine"] == "vote" else ""
    rows.append(
        f"loss: NLL of the mean probabilities{votes}; ECE: {ECE_BINS} equal-width confidence bins"
    )
    return "\n".join(rows)


__all__ = [
    "COMBINERS",
    "ECE_BINS",
    "EnsembleError",
    "Member",
    "ensemble",
    "expected_calibration_error",
    "format_table",
    "held_out_split",
    "log_probabilities",
    "mean_log_probs",
    "mean_prob",
    "member_log_probs",
    "score",
    "vote",
]
