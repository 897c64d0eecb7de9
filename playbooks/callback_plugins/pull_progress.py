"""Show the progress a polled task reports, at every poll.

Ansible prints nothing while a task is retried (`until`) but "FAILED - RETRYING", and shows a
module's output only once the task has ended; a model download can take an hour. A task that is
retried and returns `progress` (the models role's `ollama_pull_progress`) gets that line printed
at every poll, on standard error, so that it never mixes into a stdout callback's output (the
tests' JSON). Active wherever this directory is a callback path (playbooks/ansible.cfg).
"""

from __future__ import annotations

from typing import Any

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = r"""
name: pull_progress
type: aggregate
short_description: print the progress a retried task reports
description: While a task is retried, prints the `progress` field of each attempt's result.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "pull_progress"
    CALLBACK_NEEDS_ENABLED = False

    def v2_runner_retry(self, result: Any) -> None:
        progress = result._result.get("progress")
        if isinstance(progress, str) and progress:
            self._display.display(f"  [{result._host.get_name()}] {progress}", stderr=True)
