"""GoalSearch: the goal sequence of a measured latency budget, on hand-made measurements."""

import pytest

from tfprune.structured.goal_search import GoalSearch, MeasuredPoint


def test_a_first_miss_corrects_the_goal_by_the_measured_ratio():
    search = GoalSearch(0.5)
    goal = search.measured([MeasuredPoint(predicted=0.45, measured=0.55)], floor=0.1, goal=0.5)
    assert goal == pytest.approx(0.45 * 0.5 / 0.55)
    goal = GoalSearch(0.5).measured([MeasuredPoint(predicted=0.5, measured=0.4)], floor=0.1, goal=0.5)
    assert goal == pytest.approx(0.5 * 0.5 / 0.4)


def test_misses_on_one_side_take_growing_steps():
    search = GoalSearch(0.5)
    points = [MeasuredPoint(0.50, 0.45)]
    first = search.measured(points, floor=0.1, goal=0.5)
    points.append(MeasuredPoint(first, 0.46))  # flat: a larger predicted latency measures about the same
    second = search.measured(points, floor=0.1, goal=first)
    assert second / first == pytest.approx((0.5 / 0.46) ** 2)  # the second miss on the same side: squared
    points.append(MeasuredPoint(second, 0.47))
    third = search.measured(points, floor=0.1, goal=second)
    assert third / second == pytest.approx((0.5 / 0.47) ** 3)


def test_bracketing_plans_interpolate_within_limits():
    search = GoalSearch(0.5)
    points = [MeasuredPoint(0.40, 0.45), MeasuredPoint(0.60, 0.65)]
    assert search.measured(points, floor=0.1, goal=0.6) == pytest.approx(0.40 + 0.2 * (0.05 / 0.20))
    # a budget right at one end is not interpolated all the way there
    points = [MeasuredPoint(0.40, 0.499), MeasuredPoint(0.60, 0.9)]
    assert GoalSearch(0.5).measured(points, floor=0.1, goal=0.6) == pytest.approx(0.40 + 0.1 * 0.2)
    # the nearest plan on each side brackets the budget, not the first measured
    points = [MeasuredPoint(0.2, 0.3), MeasuredPoint(0.9, 0.95), MeasuredPoint(0.45, 0.48), MeasuredPoint(0.55, 0.56)]
    assert GoalSearch(0.5).measured(points, floor=0.1, goal=0.55) == pytest.approx(0.45 + 0.1 * (0.02 / 0.08))


def test_a_cost_model_that_orders_two_plans_the_other_way_halves_the_gap():
    points = [MeasuredPoint(0.50, 0.45), MeasuredPoint(0.45, 0.55)]
    assert GoalSearch(0.5).measured(points, floor=0.1, goal=0.45) == pytest.approx(0.475)


def test_goals_stay_between_the_floor_and_the_original():
    assert GoalSearch(0.3).measured([MeasuredPoint(0.3, 0.9)], floor=0.25, goal=0.3) == 0.25
    assert GoalSearch(0.9).measured([MeasuredPoint(0.9, 0.3)], floor=0.1, goal=0.9) == 1.0


def test_a_repeated_plan_bisects_towards_the_other_side():
    search = GoalSearch(0.5)
    points = [MeasuredPoint(0.40, 0.45), MeasuredPoint(0.60, 0.65)]
    goal = search.measured(points, floor=0.1, goal=0.6)  # 0.45
    # the goal gave the 0.45-measured plan again: half way on to the plan measured above
    moved = search.repeated(points[0], floor=0.1, goal=goal)
    assert moved == pytest.approx((goal + 0.60) / 2)
    # then it gave the one measured above: half way back between the two goals tried
    again = search.repeated(points[1], floor=0.1, goal=moved)
    assert again == pytest.approx((goal + moved) / 2)


def test_a_repeated_plan_on_one_side_steps_further_and_stops_at_the_floor():
    search = GoalSearch(0.5)
    point = MeasuredPoint(0.40, 0.60)
    goal = search.measured([point], floor=0.2, goal=0.5)
    assert goal == pytest.approx(0.40 * 0.5 / 0.6)
    moved = search.repeated(point, floor=0.2, goal=goal)
    assert moved == pytest.approx(goal * (0.5 / 0.6) ** 2)
    search = GoalSearch(0.5)
    search.measured([point], floor=0.39, goal=0.5)  # clamped to the floor
    assert search.repeated(point, floor=0.39, goal=0.39) is None  # nothing smaller to plan: converged


def test_bad_arguments():
    with pytest.raises(ValueError, match="latency budget must be in"):
        GoalSearch(0.0)
    with pytest.raises(ValueError, match="at least one measured plan"):
        GoalSearch(0.5).measured([], floor=0.1, goal=0.5)
