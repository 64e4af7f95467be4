"""Search: budgets, strategies, the study, and the loop that ties them to the cost model and evaluator."""

from autocompress.search.api import (
    SearchConfig,
    SearchResult,
    SearchSetup,
    default_evaluator,
    prepare,
    search,
)
from autocompress.search.budget import Budget, BudgetError, parse_budget, parse_budgets
from autocompress.search.engine import Progress, pareto_front, run_search
from autocompress.search.strategies import Strategy
from autocompress.search.study import StudyError, TrialRecord, load_study, records

__all__ = [
    "Budget", "BudgetError", "Progress", "SearchConfig", "SearchResult", "SearchSetup", "Strategy", "StudyError",
    "TrialRecord", "default_evaluator", "load_study", "pareto_front", "parse_budget", "parse_budgets", "prepare",
    "records", "run_search", "search",
]
