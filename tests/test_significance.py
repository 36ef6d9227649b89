"""McNemar's exact test and the confidence interval, against hand-computed cases."""

import math

import pytest

from significance import mcnemar_exact, mean_std_ci, t_975


def paired(b, c, both_right=5, both_wrong=2):
    """Predictions and labels with b sentences only the reference gets right and c only the other gets right."""
    labels = [1] * (b + c + both_right + both_wrong)
    reference = [1] * b + [0] * c + [1] * both_right + [0] * both_wrong
    other = [0] * b + [1] * c + [1] * both_right + [0] * both_wrong
    return reference, other, labels


@pytest.mark.parametrize(
    "b, c, p",
    [
        (3, 0, 0.25),  # 2 * (1/2)^3
        (10, 2, 2 * (1 + 12 + 66) / 4096),  # 2 * P(X <= 2), X ~ Bin(12, 1/2) = 0.0386
        (2, 10, 2 * (1 + 12 + 66) / 4096),  # symmetric
        (1, 1, 1.0),  # 2 * 3/4 capped at 1
        (0, 0, 1.0),  # no discordant pair: no evidence of a difference
        (6, 0, 2 / 64),  # 0.03125
    ],
)
def test_mcnemar_exact(b, c, p):
    found_b, found_c, found_p = mcnemar_exact(*paired(b, c))
    assert (found_b, found_c) == (b, c)
    assert found_p == pytest.approx(p, rel=1e-12)


def test_mcnemar_refuses_unpaired_predictions():
    with pytest.raises(ValueError):
        mcnemar_exact([1, 0], [1], [1, 0])


def test_confidence_interval_by_hand():
    mean, std, half = mean_std_ci([0.80, 0.82, 0.84])
    assert mean == pytest.approx(0.82) and std == pytest.approx(0.02)
    assert half == pytest.approx(4.303 * 0.02 / math.sqrt(3))  # t(0.975, 2) = 4.303
    assert mean_std_ci([0.9]) == (0.9, None, None)
    assert mean_std_ci([]) == (None, None, None)
    assert t_975(1) == 12.706 and t_975(30) == 2.042 and abs(t_975(60) - 2.000) < 0.001
