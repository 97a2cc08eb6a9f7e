"""An experiment's report: per arm the click-through, add-to-cart and purchase rates of shown items
and revenue per shopper, each with a shopper-level bootstrap interval (scipy.stats.bootstrap:
shoppers are resampled, so a shopper's many answers move together), the treatment − control
difference with its interval, a sample-ratio-mismatch check, a plain verdict, and the guardrail.

Rates are ratios of sums over an arm's shoppers (attributed impressions / impressions), so a
shopper shown 300 answers weighs as their impressions do; revenue per shopper is the mean over the
arm's exposed shoppers. The sample-ratio check is a χ² test of the shoppers per arm against the
configured share: a mismatch means assignment or logging is broken, and then nothing else in the
report can be trusted.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

from experiments.attribution import Outcomes
from lightpersml.config import ExperimentSettings

CONTROL, TREATMENT = "control", "treatment"
# metric name → (numerator column, denominator column; None: per shopper), what it is in words
METRICS = {
    "click_through_rate": ("clicked", "impressions", "shown items clicked"),
    "add_to_cart_rate": ("carted", "impressions", "shown items added to the cart"),
    "purchase_rate": ("purchased", "impressions", "shown items bought"),
    "revenue_per_shopper": ("revenue", None, "attributed revenue per exposed shopper"),
}


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class MetricResult:
    name: str
    meaning: str
    control: Interval
    treatment: Interval
    difference: Interval  # treatment − control

    @property
    def relative(self) -> float:
        """The difference as a share of the control's estimate (nan when that is 0)."""
        return self.difference.estimate / self.control.estimate if self.control.estimate else float("nan")


@dataclass(frozen=True)
class ArmSummary:
    arm: str
    shoppers: int
    exposures: int
    impressions: int
    clicked: int
    carted: int
    purchased: int
    revenue: float


@dataclass(frozen=True)
class ExperimentReport:
    experiment: str
    treatment_share: float
    window_hours: float
    arms: list[ArmSummary]
    metrics: list[MetricResult]
    primary_metric: str
    srm_p_value: float
    sample_ratio_mismatch: bool
    mixed_shoppers: int
    verdict: str
    guardrail_tripped: bool
    guardrail_detail: str

    def metric(self, name: str) -> MetricResult:
        return next(m for m in self.metrics if m.name == name)


def _statistic(numerator: np.ndarray, denominator: np.ndarray | None):
    """The arm's metric of resampled shopper indices (vectorised over the last axis)."""

    def value(index: np.ndarray, axis: int = -1) -> np.ndarray:
        index = np.asarray(index, dtype=np.int64)
        top = numerator[index].sum(axis=axis)
        if denominator is None:
            return top / index.shape[axis]
        bottom = denominator[index].sum(axis=axis)
        return np.divide(top, bottom, out=np.zeros_like(top, dtype=float), where=bottom > 0)

    return value


def _bootstrap(samples: tuple[np.ndarray, ...], statistic, estimate: float, rng, settings) -> Interval:
    """`statistic`'s percentile interval over resampled shoppers (nan bounds with < 2 per sample)."""
    if min(len(sample) for sample in samples) < 2:
        return Interval(estimate, float("nan"), float("nan"))
    result = stats.bootstrap(
        samples,
        statistic,
        confidence_level=settings.confidence,
        n_resamples=settings.resamples,
        method="percentile",
        vectorized=True,
        batch=settings.bootstrap_batch,
        random_state=rng,
    )
    low, high = result.confidence_interval
    return Interval(estimate, float(np.nan_to_num(low, nan=estimate)), float(np.nan_to_num(high, nan=estimate)))


def compare(outcomes: Outcomes, settings: ExperimentSettings) -> list[MetricResult]:
    """Each metric per arm and treatment − control, with shopper-level bootstrap intervals."""
    by_arm = [outcomes.shoppers[outcomes.shoppers["arm"] == arm] for arm in (CONTROL, TREATMENT)]
    index = tuple(np.arange(len(frame)) for frame in by_arm)  # what is resampled: shoppers
    rng = np.random.default_rng(settings.seed)
    results = []
    for metric, (top, bottom, meaning) in METRICS.items():
        control, treatment = (
            _statistic(frame[top].to_numpy(float), frame[bottom].to_numpy(float) if bottom else None)
            for frame in by_arm
        )
        estimates = float(control(index[0])), float(treatment(index[1]))
        results.append(
            MetricResult(
                metric,
                meaning,
                _bootstrap(index[:1], control, estimates[0], rng, settings),
                _bootstrap(index[1:], treatment, estimates[1], rng, settings),
                _bootstrap(
                    index,
                    lambda c, t, axis=-1, control=control, treatment=treatment: treatment(t, axis) - control(c, axis),
                    estimates[1] - estimates[0],
                    rng,
                    settings,
                ),
            )
        )
    return results


def sample_ratio_p_value(control: int, treatment: int, treatment_share: float) -> float:
    """χ² goodness of fit of the shoppers per arm against the configured share (1.0: no shoppers)."""
    total = control + treatment
    if total == 0:
        return 1.0
    expected = [total * (1 - treatment_share), total * treatment_share]
    return float(stats.chisquare([control, treatment], f_exp=expected).pvalue)


def _summary(outcomes: Outcomes, arm: str) -> ArmSummary:
    frame = outcomes.shoppers[outcomes.shoppers["arm"] == arm]
    return ArmSummary(
        arm,
        len(frame),
        int(frame["exposures"].sum()),
        int(frame["impressions"].sum()),
        int(frame["clicked"].sum()),
        int(frame["carted"].sum()),
        int(frame["purchased"].sum()),
        float(frame["revenue"].sum()),
    )


def report(
    outcomes: Outcomes, experiment: str, treatment_share: float, window_hours: float, settings: ExperimentSettings
) -> ExperimentReport:
    """The full report of one experiment's outcomes (see the module docstring)."""
    arms = [_summary(outcomes, arm) for arm in (CONTROL, TREATMENT)]
    metrics = compare(outcomes, settings)
    p_value = sample_ratio_p_value(arms[0].shoppers, arms[1].shoppers, treatment_share)
    mismatch = p_value < settings.srm_p_value
    fewest = min(a.shoppers for a in arms)
    primary = next(m for m in metrics if m.name == settings.primary_metric)
    guard = next(m for m in metrics if m.name == settings.guardrail_metric)
    comparable = not mismatch and fewest >= settings.min_shoppers_per_arm
    worst_tolerated = -settings.guardrail_margin * guard.control.estimate
    tripped = comparable and guard.difference.high < worst_tolerated
    if mismatch:
        verdict = (
            f"sample ratio mismatch ({arms[0].shoppers} control vs {arms[1].shoppers} treatment shoppers for a "
            f"{treatment_share:.0%} share, p = {p_value:.2g}): assignment or logging is broken, do not trust this report"
        )
    elif fewest < settings.min_shoppers_per_arm:
        verdict = f"too early: {fewest} shoppers in the smaller arm, the report needs {settings.min_shoppers_per_arm}"
    else:
        d = primary.difference
        words = "better" if d.low > 0 else "worse" if d.high < 0 else None
        span = f"{d.estimate:+.4f} (95% CI {d.low:+.4f} to {d.high:+.4f}; {primary.relative:+.1%} of control)"
        verdict = (
            f"treatment is {words}: {primary.meaning} {span}"
            if words
            else f"no detectable difference: {primary.meaning} {span}, an interval that includes 0"
        )
    detail = (
        f"{guard.meaning}: treatment − control at most {guard.difference.high:+.4f} "
        f"(95% CI upper bound), below the tolerated {worst_tolerated:+.4f}"
        if tripped
        else ""
    )
    return ExperimentReport(
        experiment,
        treatment_share,
        window_hours,
        arms,
        metrics,
        settings.primary_metric,
        p_value,
        mismatch,
        outcomes.mixed_shoppers,
        verdict,
        tripped,
        detail,
    )


def markdown(report: ExperimentReport) -> str:
    """The report as a short Markdown page (Prefect artifact, CLI, benchmark results)."""
    lines = [
        f"# Experiment {report.experiment}",
        "",
        f"**Verdict:** {report.verdict}",
        "",
        f"Treatment share {report.treatment_share:.0%}, attribution window {report.window_hours:g} h. "
        f"Sample ratio check: p = {report.srm_p_value:.3g}"
        + (" (**mismatch**)" if report.sample_ratio_mismatch else " (fine)")
        + (f"; {report.mixed_shoppers} shoppers seen in both arms were left out" if report.mixed_shoppers else "")
        + ".",
        "",
        "| arm | shoppers | exposures | shown items | clicked | carted | bought | revenue |",
        "|---|---|---|---|---|---|---|---|",
        *(
            f"| {a.arm} | {a.shoppers:,} | {a.exposures:,} | {a.impressions:,} | {a.clicked:,} | {a.carted:,} "
            f"| {a.purchased:,} | {a.revenue:,.2f} |"
            for a in report.arms
        ),
        "",
        "| metric | control (95% CI) | treatment (95% CI) | treatment − control (95% CI) |",
        "|---|---|---|---|",
        *(
            f"| {m.name}{' (primary)' if m.name == report.primary_metric else ''} "
            f"| {m.control.estimate:.4f} ({m.control.low:.4f}–{m.control.high:.4f}) "
            f"| {m.treatment.estimate:.4f} ({m.treatment.low:.4f}–{m.treatment.high:.4f}) "
            f"| {m.difference.estimate:+.4f} ({m.difference.low:+.4f} to {m.difference.high:+.4f}) |"
            for m in report.metrics
        ),
    ]
    if report.guardrail_tripped:
        lines += ["", f"**Guardrail tripped:** {report.guardrail_detail}. The treatment is stopped."]
    return "\n".join(lines) + "\n"
