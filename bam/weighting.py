"""Loss weighting: how a step's per-task losses become the one gradient the optimizer follows.

A training step hands the weighting each round's per-task losses (tensors with
their graphs) and a `backward` function; the weighting combines them and runs
the backward pass, and returns the weight it gave each task, which the training
log records. After the step's last round `combine` may rewrite the shared
parameters' gradients (the gradient methods), and after the optimizer's update
`end_step` sees the step's losses (and, for FAMO, the same batches' losses
after the update). A weighting is an `nn.Module`: learnable state (uncertainty
weighting's log-variances) is a parameter the optimizer trains in its own
group without weight decay; every other state is a buffer; both are
checkpointed and restored with the model, so a resumed run is exact.

The methods (`loss_weighting` in a recipe's training section, their settings
in `loss_weighting_options`; the maths of each is a pure function below, tested
against ../shared/reference/mt-dnn-and-loss-weighting.md §2):

    equal        every loss with weight 1 (BAM's and MT-DNN's plain sum; the default)
    fixed        a constant weight per task, from the options (unnamed tasks: 1)
    uncertainty  Kendall et al. 2018: learned log-variances s, exp(-s) L + s/2 for a
                 categorical task, exp(-s) L / 2 + s/2 for a Gaussian (regression) one
    dwa          Liu et al. 2019: T softmax(L(t-1) / L(t-2) / tau) from the epochs' mean
                 training losses; 1 for the first two epochs
    dtp          Guo et al. 2018: focal weight -(1 - k)^gamma log k of each task's smoothed KPI
    gradnorm     Chen et al. 2018: weights moved so the weighted gradient norms at the last
                 shared layer follow the tasks' relative training rates, sum kept at T
    mgda         Sener & Koltun 2018: the min-norm convex combination of the tasks' gradients
    pcgrad       Yu et al. 2020: each task's gradient projected off those it conflicts with
    famo         Liu et al. 2023: weights from learned logits, moved by how much each loss fell

The last four need every task's loss in every step: a recipe that chooses one
gets the all-tasks sampler (`bam.config`). gradnorm, mgda and pcgrad keep one
gradient per task of every shared parameter (mgda, pcgrad: the whole encoder;
gradnorm: its last layer). Every method but equal and fixed keeps state that
follows each step's losses or gradients, which processes do not share: they run
in one process only. A batch split into memory passes (several rounds in a
step) is weighted once per step: the passes' gradients add up before the
gradient methods use them, and uncertainty's log-variance term, DTP's KPI and
FAMO's weights count once per step.
"""

from __future__ import annotations

import functools
import math
import operator
from collections.abc import Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from bam.config import did_you_mean
from bam.errors import BamError

Backward = Callable[[torch.Tensor], None]


# ---------------------------------------------------------------------------
# The maths, as pure functions.


def dwa_weights(last: Sequence[float], before_last: Sequence[float], temperature: float) -> np.ndarray:
    """DWA's weights: T softmax_k((L_k(t-1) / L_k(t-2)) / temperature)."""
    ratios = np.asarray(last, dtype=np.float64) / np.asarray(before_last, dtype=np.float64)
    exponentials = np.exp(ratios / temperature - np.max(ratios / temperature))
    return len(ratios) * exponentials / exponentials.sum()


def focal_weight(kpi: float, gamma: float) -> float:
    """DTP's task-level focal weight -(1 - kpi)^gamma log(kpi): large for a task doing badly."""
    return -((1.0 - kpi) ** gamma) * math.log(kpi)


def smoothed(previous: float, current: float, smoothing: float) -> float:
    """An exponential moving average: smoothing * current + (1 - smoothing) * previous."""
    return smoothing * current + (1.0 - smoothing) * previous


def gradnorm_step(weights: np.ndarray, norms: np.ndarray, loss_ratios: np.ndarray, alpha: float, learning_rate: float) -> np.ndarray:
    """One GradNorm update of the task weights.

    `norms` are ||grad_W L_i|| at the last shared layer W, so the weighted norms are
    G_i = w_i norms_i; `loss_ratios` are L_i(t) / L_i(0). The targets mean(G) r_i^alpha,
    r_i = ratio_i / mean(ratio), are constants; the gradient of sum_i |G_i - target_i|
    with respect to w_i is sign(G_i - target_i) norms_i. A gradient step, then the
    weights rescaled to sum to T (kept positive).
    """
    weighted = weights * norms
    relative = loss_ratios / loss_ratios.mean()
    targets = weighted.mean() * relative**alpha
    stepped = np.maximum(weights - learning_rate * np.sign(weighted - targets) * norms, 1e-6)
    return stepped * len(weights) / stepped.sum()


def min_norm_weights(gram: np.ndarray, iterations: int = 250, tolerance: float = 1e-7) -> np.ndarray:
    """The point alpha of the simplex minimising ||sum_i alpha_i g_i||^2, from the Gram matrix g_i . g_j.

    Two tasks: the exact closed form (clipped to [0, 1], not to the official code's
    [0.001, 0.999]). More: Frank-Wolfe from the uniform point, with the exact line
    search of each step (Sener & Koltun's Algorithm 2).
    """
    count = len(gram)
    if count == 1:
        return np.ones(1)
    if count == 2:
        difference = gram[0, 0] - 2 * gram[0, 1] + gram[1, 1]
        first = 0.5 if difference <= 0 else float(np.clip((gram[1, 1] - gram[0, 1]) / difference, 0.0, 1.0))
        return np.array([first, 1.0 - first])
    alpha = np.full(count, 1.0 / count)
    for _ in range(iterations):
        corner = int(np.argmin(gram @ alpha))  # the vertex the gradient of the norm points most against
        current, toward = alpha @ gram @ alpha, gram[corner] @ alpha  # ||d||^2 and e_corner^T G alpha
        gap = current - 2 * toward + gram[corner, corner]  # ||d - g_corner||^2
        if gap <= 0:
            break
        step = float(np.clip((current - toward) / gap, 0.0, 1.0))
        if step < tolerance:
            break
        alpha = (1 - step) * alpha
        alpha[corner] += step
    return alpha


def pcgrad(gradients: torch.Tensor, orders: Sequence[Sequence[int]]) -> torch.Tensor:
    """PCGrad's update: each task's gradient (a row) projected off the others' where they conflict, in the given orders, then summed."""
    projected = gradients.clone()
    for task, order in enumerate(orders):
        for other in order:
            if other == task:
                continue
            dot = projected[task] @ gradients[other]
            if dot < 0:
                projected[task] -= dot / (gradients[other] @ gradients[other]) * gradients[other]
    return projected.sum(dim=0)


def famo_weights(logits: torch.Tensor, losses: torch.Tensor) -> torch.Tensor:
    """FAMO's loss weights c z_i / l_i, z = softmax(logits), c = 1 / sum_i z_i / l_i."""
    z = torch.softmax(logits, dim=0)
    return z / losses / (z / losses).sum()


def famo_logit_gradient(logits: torch.Tensor, decreases: torch.Tensor) -> torch.Tensor:
    """The gradient of z . delta with respect to the logits (z = softmax(logits), delta = log l_before - log l_after)."""
    z = torch.softmax(logits, dim=0)
    return z * decreases - z * (z @ decreases)


def adam_step(parameter, gradient, first, second, step: int, learning_rate: float, weight_decay: float, betas=(0.9, 0.999), epsilon=1e-8):
    """One Adam update with L2 weight decay (as torch.optim.Adam), on plain tensors: (parameter, first moment, second moment)."""
    gradient = gradient + weight_decay * parameter
    first = betas[0] * first + (1 - betas[0]) * gradient
    second = betas[1] * second + (1 - betas[1]) * gradient**2
    corrected = first / (1 - betas[0] ** step), second / (1 - betas[1] ** step)
    return parameter - learning_rate * corrected[0] / (corrected[1].sqrt() + epsilon), first, second


# ---------------------------------------------------------------------------
# The methods.


# What each method's setting may be (every one finite).
OPTION_RANGES: dict[str, tuple[Callable[[float], bool], str]] = {
    "initial": (lambda value: True, "a finite number"),
    "temperature": (lambda value: value > 0, "greater than 0"),
    "gamma": (lambda value: value >= 0, "at least 0"),
    "smoothing": (lambda value: 0 < value <= 1, "in (0, 1]"),
    "floor": (lambda value: 0 < value < 1, "in (0, 1)"),
    "ceiling": (lambda value: 0 < value < 1, "in (0, 1)"),
    "alpha": (lambda value: value >= 0, "at least 0"),
    "learning_rate": (lambda value: value > 0, "greater than 0"),
    "weight_decay": (lambda value: value >= 0, "at least 0"),
}


class LossWeighting(nn.Module):
    """The interface: `backward` once per round of losses, `combine` after the last round, `end_step` after the update."""

    name = ""
    options: dict[str, float] = {}  # the method's settings with their defaults
    needs_all_tasks = False  # every task's loss in every step (the all-tasks sampler)
    needs_kpi = False  # `backward` gets each task's batch KPI (bam.task_types.TaskType.kpi)
    needs_losses_after_step = False  # `end_step` gets the same batches' losses after the update
    runs_in_several_processes = False  # its state follows each step's losses or gradients, which processes do not share

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__()
        # task name -> its likelihood ("categorical" or "gaussian"); a plain list of names means categorical tasks
        self.likelihoods = dict(tasks) if isinstance(tasks, Mapping) else dict.fromkeys(tasks, "categorical")
        self.task_names = list(self.likelihoods)
        self.settings = {**self.options, **(settings or {})}

    @classmethod
    def check_options(cls, settings: Mapping[str, float], task_names: Sequence[str]) -> None:
        """Refuse settings this method does not have, naming the first."""
        for key, value in settings.items():
            if key not in cls.options:
                known = ", ".join(cls.options) or "none"
                raise BamError(f"loss_weighting_options: {key!r} is not a setting of {cls.name}{did_you_mean(key, cls.options)} (its settings: {known})")
            allowed, described = OPTION_RANGES[key]
            if not (math.isfinite(value) and allowed(value)):
                raise BamError(f"loss_weighting_options: {cls.name}'s {key} = {value!r} must be {described}")
        merged = {**cls.options, **settings}
        if "floor" in merged and not merged["floor"] < merged["ceiling"]:
            raise BamError(f"loss_weighting_options: {cls.name}'s floor ({merged['floor']}) must be below its ceiling ({merged['ceiling']})")

    def attach(self, shared: list[nn.Parameter], last_shared: list[nn.Parameter]) -> None:
        """The encoder's parameters, and those of its last layer, for the methods that read their gradients."""
        self.shared, self.last_shared = shared, last_shared

    def end_of_step(self) -> None:
        """Forget what was kept for the step just taken (called by every `end_step`)."""
        self.__dict__.pop("step_weights", None)
        self.__dict__.pop("seen", None)

    def weights(self, task_names: Sequence[str]) -> dict[str, float | torch.Tensor]:
        """Each task's weight for this step (a tensor where it is learnable)."""
        raise NotImplementedError

    def backward(
        self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None
    ) -> dict[str, float]:
        """Backpropagate the weighted sum of `losses` (one round of a step: each task's pass, its loss scaled by its share of the batch).

        `kpis` are the passes' batch KPIs (for methods that need them), `means` their mean losses before scaling.
        Returns the weight each task got.
        """
        weights = self.weights(list(losses))
        backward(functools.reduce(operator.add, (weights[name] * loss for name, loss in losses.items())))
        return {name: float(weights[name]) for name in losses}

    def combine(self) -> dict[str, float]:
        """After the step's last round: rewrite the shared gradients if the method works on gradients; the weights to record."""
        return {}

    def end_step(self, losses: dict[str, float], losses_after: dict[str, float] | None = None) -> None:
        """Called after each optimizer step with its per-task losses (detached), for weightings that track them."""
        self.end_of_step()


class Equal(LossWeighting):
    """Every task's loss with weight 1."""

    name = "equal"
    runs_in_several_processes = True

    def weights(self, task_names: Sequence[str]) -> dict[str, float]:
        return dict.fromkeys(task_names, 1.0)  # multiplying by one is exact: the numbers of a plain sum


class Fixed(LossWeighting):
    """A constant weight per task, named in `loss_weighting_options` (task = weight); tasks not named weigh 1.

    Unlike LibMTL's equal weighting (1 per task whatever its docstring says), nothing is normalised: the weights are as written.
    """

    name = "fixed"
    runs_in_several_processes = True

    @classmethod
    def check_options(cls, settings: Mapping[str, float], task_names: Sequence[str]) -> None:
        for key, value in settings.items():
            if key not in task_names:
                raise BamError(f"loss_weighting_options: {key!r} is not one of the recipe's tasks{did_you_mean(key, task_names)} (fixed takes task = weight)")
            if not 0 <= value < math.inf:
                raise BamError(f"loss_weighting_options: the weight of {key!r} must be at least 0 and finite, got {value!r}")

    def weights(self, task_names: Sequence[str]) -> dict[str, float]:
        return {name: float(self.settings.get(name, 1.0)) for name in task_names}


class Uncertainty(LossWeighting):
    """Kendall, Gal & Cipolla (CVPR 2018): each task's loss scaled by a learned precision, plus its log-variance.

    With s = log sigma^2 learned per task (starting at `initial`): exp(-s) L + s/2 for a
    categorical task (classification, ranking), exp(-s) L / 2 + s/2 for a Gaussian one
    (regression). LibMTL uses the Gaussian form for every task; here the form follows
    the task type. At the optimum weight * L = 1/2 in both forms.
    """

    name = "uncertainty"
    options = {"initial": 0.0}

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        # One parameter per task: a task absent from a step gets no gradient, so AdamW leaves its s alone (one vector
        # would get a zero gradient for it, and momentum would keep moving it).
        self.log_variances = nn.ParameterList([nn.Parameter(torch.tensor(float(self.settings["initial"]))) for _ in self.task_names])
        self.factors = {name: 1.0 if likelihood == "categorical" else 0.5 for name, likelihood in self.likelihoods.items()}

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None) -> dict[str, float]:
        terms, weights = [], {}
        seen = self.__dict__.setdefault("seen", set())
        for name, loss in losses.items():
            log_variance = self.log_variances[self.task_names.index(name)]
            weight = self.factors[name] * torch.exp(-log_variance)
            # The losses of a batch's memory passes add up to its loss; its log-variance term counts once per step.
            terms.append(weight * loss + (0.0 if name in seen else 0.5 * log_variance))
            seen.add(name)
            weights[name] = weight.detach().item()
        backward(functools.reduce(operator.add, terms))
        return weights


class DWA(LossWeighting):
    """Dynamic Weight Average (Liu, Johns & Davison, CVPR 2019), from each epoch's mean training loss per task.

    An epoch is `steps_per_epoch` optimizer steps (the run's steps / its epochs), since
    the multi-task samplers do not visit every example exactly once. As the official
    code: weights 1 for the first two epochs, then fixed for a whole epoch. A task the
    last epochs did not train keeps the ratio 1.
    """

    name = "dwa"
    options = {"temperature": 2.0}

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        self.steps_per_epoch = steps_per_epoch
        count = len(tasks)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))
        self.register_buffer("current", torch.zeros(count, 2, dtype=torch.float64))  # this epoch's loss sums and counts
        self.register_buffer("history", torch.zeros(2, count, dtype=torch.float64))  # the last two epochs' mean losses
        self.register_buffer("epochs_done", torch.zeros((), dtype=torch.int64))
        self.register_buffer("lambdas", torch.ones(count, dtype=torch.float64))

    def weights(self, task_names: Sequence[str]) -> dict[str, float]:
        return {name: float(self.lambdas[self.task_names.index(name)]) for name in task_names}

    def end_step(self, losses: dict[str, float], losses_after: dict[str, float] | None = None) -> None:
        self.end_of_step()
        for name, loss in losses.items():
            self.current[self.task_names.index(name)] += torch.tensor([loss, 1.0], dtype=torch.float64, device=self.current.device)
        self.step += 1
        if int(self.step) % self.steps_per_epoch:
            return
        counts = self.current[:, 1]
        means = torch.where(counts > 0, self.current[:, 0] / counts.clamp(min=1), self.history[1])
        self.history.copy_(torch.stack([self.history[1], means]))
        self.current.zero_()
        self.epochs_done += 1
        if int(self.epochs_done) >= 2:
            before, last = self.history[0].cpu().numpy(), self.history[1].cpu().numpy()
            ratios_defined = (before > 0) & (last > 0)
            lambdas = dwa_weights(np.where(ratios_defined, last, 1.0), np.where(ratios_defined, before, 1.0), self.settings["temperature"])
            self.lambdas.copy_(torch.from_numpy(lambdas))


class DTP(LossWeighting):
    """Dynamic Task Prioritization (Guo et al., ECCV 2018): a task doing badly by its KPI weighs more.

    KPI: the task type's batch KPI (`TaskType.kpi`: batch accuracy for classification,
    1 - mean absolute error on the [0, 1] scale for regression, group accuracy for
    ranking), smoothed per task with `smoothing` (the weight of the newest batch; 1:
    no smoothing, as the CLUE/Tianchi challenge's implementations) and clipped to
    [`floor`, `ceiling`], so log(0) and a weight of exactly 0 cannot happen. The
    weight, -(1 - k)^gamma log k, is a constant for the backward pass.
    """

    name = "dtp"
    options = {"gamma": 0.5, "smoothing": 0.5, "floor": 0.1, "ceiling": 0.99}
    needs_kpi = True

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        self.register_buffer("kpis", torch.full((len(tasks),), math.nan, dtype=torch.float64))  # NaN: not seen yet

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None) -> dict[str, float]:
        # A step's weight comes from its first pass's KPI: the passes of one batch share one weight, and the average moves once.
        weights = self.__dict__.setdefault("step_weights", {})
        for name, kpi in kpis.items():
            if name in weights:
                continue
            index = self.task_names.index(name)
            previous = float(self.kpis[index])
            self.kpis[index] = kpi if math.isnan(previous) else smoothed(previous, kpi, self.settings["smoothing"])
            clipped = min(max(float(self.kpis[index]), self.settings["floor"]), self.settings["ceiling"])
            weights[name] = focal_weight(clipped, self.settings["gamma"])
        backward(functools.reduce(operator.add, (weights[name] * loss for name, loss in losses.items())))
        return {name: weights[name] for name in losses}


class _TaskGradients(LossWeighting):
    """A method that needs each task's gradient of the encoder: the backward runs task by task, each gradient kept apart.

    The heads get their own task's gradient unweighted (each head is trained by one
    task only, and under Adam a constant factor on it would change nothing);
    `combine` then writes the encoder's gradient from the per-task ones.
    """

    needs_all_tasks = True

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None) -> dict[str, float]:
        if not hasattr(self, "task_gradients"):
            self.task_gradients: dict[str, torch.Tensor] = {}
            self.reached = [False] * len(self.shared)  # parameters no task's loss reaches (BERT's unused pooler) keep no gradient
        for name, loss in losses.items():
            backward(loss)
            self.reached = [reached or parameter.grad is not None for reached, parameter in zip(self.reached, self.shared)]
            gradient = torch.cat([(parameter.grad if parameter.grad is not None else torch.zeros_like(parameter)).flatten() for parameter in self.shared])
            if name in self.task_gradients:  # a later memory pass of the step: its gradient adds up
                self.task_gradients[name] += gradient
            else:
                self.task_gradients[name] = gradient
            for parameter in self.shared:
                parameter.grad = None
        return dict.fromkeys(losses, 1.0)

    def combine(self) -> dict[str, float]:
        names = list(self.task_gradients)
        gradients = torch.stack([self.task_gradients[name] for name in names])
        direction, weights = self.direction(names, gradients)
        offset = 0
        for parameter, reached in zip(self.shared, self.reached):
            parameter.grad = direction[offset : offset + parameter.numel()].view_as(parameter).clone() if reached else None
            offset += parameter.numel()
        del self.task_gradients, self.reached
        return dict(zip(names, weights))

    def direction(self, names: list[str], gradients: torch.Tensor) -> tuple[torch.Tensor, list[float]]:
        raise NotImplementedError


class MGDA(_TaskGradients):
    """MGDA (Sener & Koltun, NeurIPS 2018): the encoder follows the min-norm point of the convex hull of the tasks' gradients.

    The gradients are those of every encoder parameter, not of the shared representation:
    with one batch per task the tasks have no representation in common, so MGDA-UB's
    shortcut does not apply. Cost: T gradients of the encoder in memory (about 90 MB each
    for MiniLM in fp32) and a T x T Gram matrix per step. Unnormalised gradients, and the
    exact two-task solution (the official code clips to 0.001 / 0.999).
    """

    name = "mgda"

    def direction(self, names, gradients):
        gram = (gradients @ gradients.T).double().cpu().numpy()  # a T x T product; in float64 it would copy every gradient
        alpha = min_norm_weights(gram)
        return torch.from_numpy(alpha).to(gradients) @ gradients, alpha.tolist()


class PCGrad(_TaskGradients):
    """PCGrad (Yu et al., NeurIPS 2020) on the encoder's gradients; the other tasks' order is drawn anew each step, from the step number."""

    name = "pcgrad"

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        self.register_buffer("step", torch.zeros((), dtype=torch.int64))

    def direction(self, names, gradients):
        generator = np.random.default_rng(int(self.step))
        self.step += 1
        orders = [generator.permutation(len(names)).tolist() for _ in names]
        return pcgrad(gradients, orders), [1.0] * len(names)


class GradNorm(LossWeighting):
    """GradNorm (Chen et al., ICML 2018) with the gradient norms at the encoder's last layer, as the paper (LibMTL: all shared parameters).

    The weights start at 1, L_i(0) is each task's loss in the first step, and after
    each step the weights take one gradient step (`learning_rate`) of GradNorm's loss
    with asymmetry `alpha` and are rescaled to sum to T.
    """

    name = "gradnorm"
    options = {"alpha": 1.5, "learning_rate": 0.025}
    needs_all_tasks = True

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        self.register_buffer("task_weights", torch.ones(len(tasks), dtype=torch.float64))
        self.register_buffer("initial_losses", torch.full((len(tasks),), math.nan, dtype=torch.float64))

    def weights(self, task_names: Sequence[str]) -> dict[str, float]:
        return {name: float(self.task_weights[self.task_names.index(name)]) for name in task_names}

    def attach(self, shared: list[nn.Parameter], last_shared: list[nn.Parameter]) -> None:
        if not last_shared:
            raise BamError("loss_weighting gradnorm: the encoder has no numbered layers, so there is no last shared layer to take gradient norms at")
        super().attach(shared, last_shared)

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None) -> dict[str, float]:
        if not hasattr(self, "layer_gradients"):
            self.layer_gradients: dict[str, list[torch.Tensor]] = {}
        for name, loss in losses.items():
            gradients = torch.autograd.grad(loss, self.last_shared, retain_graph=True, allow_unused=True)
            summed = [torch.zeros_like(parameter) if gradient is None else gradient for parameter, gradient in zip(self.last_shared, gradients)]
            earlier = self.layer_gradients.get(name)
            self.layer_gradients[name] = summed if earlier is None else [a + b for a, b in zip(earlier, summed)]
        return super().backward(losses, backward)

    def end_step(self, losses: dict[str, float], losses_after: dict[str, float] | None = None) -> None:
        self.end_of_step()
        names = list(self.layer_gradients)
        indices = [self.task_names.index(name) for name in names]
        norms = np.array([math.sqrt(sum(float((gradient.double() ** 2).sum()) for gradient in self.layer_gradients[name])) for name in names])
        del self.layer_gradients
        current = np.array([losses[name] for name in names])
        for index, loss in zip(indices, current):
            if math.isnan(float(self.initial_losses[index])):
                self.initial_losses[index] = loss
        ratios = current / self.initial_losses[indices].cpu().numpy()
        updated = gradnorm_step(self.task_weights[indices].cpu().numpy(), norms, ratios, self.settings["alpha"], self.settings["learning_rate"])
        self.task_weights[indices] = torch.from_numpy(updated).to(self.task_weights.device)


class FAMO(LossWeighting):
    """FAMO (Liu et al., NeurIPS 2023): weights c z_i / l_i from logits xi, and xi moved by each loss's fall over the step.

    After the update the same batches are scored again (`needs_losses_after_step`); with
    delta_i = log l_i(before) - log l_i(after), xi takes one Adam step on the gradient of
    z . delta (`learning_rate`, `weight_decay`: the paper's 0.025 and 0.001). The weights
    are set once per step from each task's first memory pass (the whole batch, unless
    it is split), so all its passes share one weight.
    """

    name = "famo"
    options = {"learning_rate": 0.025, "weight_decay": 0.001}
    needs_all_tasks = True
    needs_losses_after_step = True

    def __init__(self, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1):
        super().__init__(tasks, settings, steps_per_epoch)
        count = len(tasks)
        for name in ("logits", "first_moment", "second_moment"):
            self.register_buffer(name, torch.zeros(count, dtype=torch.float64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    def backward(self, losses: dict[str, torch.Tensor], backward: Backward, kpis: dict[str, float] | None = None, means: dict[str, float] | None = None) -> dict[str, float]:
        # Weights once per step, from the first round, which holds every task's first pass (its mean loss stands for the batch's).
        weights = self.__dict__.get("step_weights")
        if weights is None:
            indices = [self.task_names.index(name) for name in losses]
            values = torch.tensor([max(means[name], 1e-12) for name in losses], dtype=torch.float64, device=self.logits.device)
            weights = self.step_weights = dict(zip(losses, famo_weights(self.logits[indices], values).tolist()))
        backward(functools.reduce(operator.add, (weights[name] * loss for name, loss in losses.items())))
        return {name: weights[name] for name in losses}

    def end_step(self, losses: dict[str, float], losses_after: dict[str, float] | None = None) -> None:
        self.end_of_step()
        names = [name for name in losses if name in losses_after]
        indices = [self.task_names.index(name) for name in names]
        decreases = [math.log(max(losses[name], 1e-12)) - math.log(max(losses_after[name], 1e-12)) for name in names]
        decreases = torch.tensor(decreases, dtype=torch.float64, device=self.logits.device)
        gradient = torch.zeros_like(self.logits)
        gradient[indices] = famo_logit_gradient(self.logits[indices], decreases)
        self.updates += 1
        logits, first, second = adam_step(
            self.logits, gradient, self.first_moment, self.second_moment, int(self.updates), self.settings["learning_rate"], self.settings["weight_decay"]
        )  # fmt: skip
        self.logits.copy_(logits), self.first_moment.copy_(first), self.second_moment.copy_(second)


WEIGHTINGS: dict[str, type[LossWeighting]] = {
    weighting.name: weighting for weighting in (Equal, Fixed, Uncertainty, DWA, DTP, GradNorm, MGDA, PCGrad, FAMO)
}


def build_weighting(name: str, tasks: Mapping[str, str] | Sequence[str], settings: Mapping[str, float] | None = None, steps_per_epoch: int = 1) -> LossWeighting:
    """The method `name` for the tasks (name -> likelihood, in task order), with its settings; `steps_per_epoch` for DWA's epochs."""
    if name not in WEIGHTINGS:
        raise BamError(f"loss_weighting: unknown method {name!r}{did_you_mean(name, WEIGHTINGS)}; known: {', '.join(WEIGHTINGS)}")
    WEIGHTINGS[name].check_options(dict(settings or {}), list(tasks))
    return WEIGHTINGS[name](tasks, settings, max(1, steps_per_epoch))
