"""Krum: scores by hand, Multi-Krum, the outlier is never chosen, absent tasks."""

import numpy as np

# Three gradients close together on the x axis and one far away.
GRADS = np.array([[1.0, 0.0], [1.3, 0.0], [0.9, 0.0], [-9.0, 9.0]], "float32")


def test_hand_worked_scores(helpers):
    # f = 0: 4 - 0 - 2 = 2 neighbours. Scores: t0 0.1 + 0.3, t1 0.3 + 0.4, t2 0.1 + 0.4, t3 large.
    weighting = helpers.make("krum", num_tasks=4, n_byzantine=0)
    np.testing.assert_allclose(helpers.aggregate(weighting, GRADS), GRADS[0], rtol=1e-6)
    np.testing.assert_allclose(helpers.weights_of(weighting), [1, 0, 0, 0])
    # Multi-Krum: the two best, t0 and t2, averaged.
    weighting = helpers.make("krum", num_tasks=4, n_byzantine=0, n_selected=2)
    np.testing.assert_allclose(helpers.aggregate(weighting, GRADS), [0.95, 0.0], rtol=1e-6)
    np.testing.assert_allclose(helpers.weights_of(weighting), [0.5, 0, 0.5, 0])
    # f = 1: one neighbour each: t2 (0.1) ties t0 (0.1) and the first is kept; never the outlier.
    weighting = helpers.make("krum", num_tasks=4, n_byzantine=1, n_selected=3)
    helpers.aggregate(weighting, GRADS)
    assert helpers.weights_of(weighting)[3] == 0.0


def test_absent_tasks_are_never_chosen_and_compiled_steps_match(helpers):
    weighting = helpers.make("krum", num_tasks=4)
    # t0 absent: 3 - 0 - 2 = 1 neighbour; t1 and t2 score 0.4 each (t1 kept, the first), t3 ~13.
    helpers.aggregate(weighting, GRADS, present=[0, 1, 1, 1])
    np.testing.assert_allclose(helpers.weights_of(weighting), [0, 1, 0, 0])
    helpers.assert_compiled_steps_match_eager(
        "krum", [(GRADS, np.ones(4), [1, 1, 1, 1]), (GRADS, np.ones(4), [1, 0, 1, 1])], 4,
        n_selected=2)
