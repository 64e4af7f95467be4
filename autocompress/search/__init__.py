"""Search: budgets, strategies, the study, and the loop that ties them to the cost model and evaluator."""

from autocompress.search.api import (
    ConfigError,
    SearchConfig,
    SearchResult,
    SearchSetup,
    check,
    default_evaluator,
    prepare,
    search,
)
from autocompress.search.budget import Budget, BudgetError, parse_budget, parse_budgets
from autocompress.search.engine import Progress, SearchRun, SearchStalled, pareto_front, run_search
from autocompress.search.strategies import (
    STRATEGIES,
    Strategy,
    check_strategy,
    register_strategy,
    strategy_names,
)
from autocompress.search.study import StudyError, TrialRecord, load_study, records

__all__ = [
    "STRATEGIES", "Budget", "BudgetError", "ConfigError", "Progress", "SearchConfig", "SearchResult", "SearchRun",
    "SearchSetup", "SearchStalled", "Strategy", "StudyError", "TrialRecord", "check", "check_strategy",
    "default_evaluator", "load_study", "pareto_front", "parse_budget", "parse_budgets", "prepare", "records",
    "register_strategy", "run_search", "search", "strategy_names",
]
