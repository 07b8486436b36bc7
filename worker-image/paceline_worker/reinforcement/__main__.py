"""`python -m paceline_worker.reinforcement`: an actor or a learner (PACELINE_ROLE); see the README.

Exit status: 0 when the stopping rule was met or after SIGTERM (the learner checkpoints first), 2 for a bad
configuration, 1 when an actor's learner stayed unreachable.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import asdict

from ..config import ConfigError
from ..signals import StopRequest
from ..termination import write_termination_message
from .actor import Actor
from .config import RlRole, rl_config_from_env
from .exchange import LearnerGone
from .learner import Learner


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        config = rl_config_from_env(os.environ)
    except ConfigError as exc:
        write_termination_message(f"InvalidConfiguration: {exc}")
        print(f"paceline reinforcement: {exc}", file=sys.stderr)
        return 2
    stop = StopRequest()
    stop.install()
    if config.role is RlRole.LEARNER:
        assert config.learner is not None
        learner = Learner(config.learner, stop=stop)
        reason = learner.run()
        summary = learner.status()
        write_termination_message(f"{reason.value if reason else 'Stopped'}: {json.dumps(summary)}")
        print(json.dumps(summary), flush=True)
        return 0
    assert config.actor is not None
    try:
        stats = Actor(config.actor, stop=stop).run()
    except LearnerGone as exc:
        write_termination_message(f"LearnerUnreachable: {exc}")
        print(f"paceline actor: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"role": "actor", "index": config.actor.index, **asdict(stats)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
