"""The test bed's strategy: Ansible's ``linear`` run through Mitogen (pinned in pyproject.toml).

Mitogen keeps one Python interpreter per test host and runs each module in it instead of
starting ``docker exec`` + a fresh interpreter + an AnsiballZ unpack per task; on the 2-core
CI machine that is most of the cost of a task that changes nothing. The roles are the
same either way: production runs use Ansible's own strategy (``MJP_STRATEGY=linear make
test`` runs the test bed without Mitogen too).

Plays on ``localhost`` alone (molecule's own create/destroy playbooks, which poll
``async`` jobs that Mitogen's local connection never reports finished) run with plain
``linear``. Ansible finds a strategy by its file name in ``strategy_plugins``.
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.strategy.linear import (  # type: ignore[import-untyped]
    StrategyModule as LinearStrategy,
)
from ansible_mitogen.plugins.strategy.mitogen_linear import (  # type: ignore[import-untyped]
    StrategyModule as MitogenLinearStrategy,
)


def localhost_only(play: Any) -> bool:
    """True for a play whose ``hosts`` is just ``localhost``."""
    hosts = play.hosts
    names = [hosts] if isinstance(hosts, str) else list(hosts or [])
    return names == ["localhost"]


class StrategyModule(MitogenLinearStrategy):  # type: ignore[misc]
    def run(self, iterator: Any, play_context: Any, result: int = 0) -> Any:
        if localhost_only(iterator._play):
            # Without Mitogen's wrappers: the stock connection and action plugins.
            return LinearStrategy.run(self, iterator, play_context)
        return super().run(iterator, play_context, result)
