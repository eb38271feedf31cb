"""The test bed's ``free`` strategy through Mitogen (see ``mitogen_linear`` here).

``playbooks/site.yml`` runs the Moodle host and the hubs side by side: its play takes the
configured strategy with ``linear`` made ``free``, so the test bed's ``mitogen_linear``
becomes this one. Ansible finds a strategy by its file name in ``strategy_plugins``.
"""

from __future__ import annotations

from ansible_mitogen.plugins.strategy.mitogen_free import (  # type: ignore[import-untyped]
    StrategyModule as MitogenFreeStrategy,
)


class StrategyModule(MitogenFreeStrategy):  # type: ignore[misc]
    """Mitogen's free strategy, found under this name in the test bed's plugin folder."""
