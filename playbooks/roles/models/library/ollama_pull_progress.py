#!/usr/bin/python
"""Read how far a model pull has come, from the output file of its background job.

The role starts each pull as a background job whose output (ollama_models.py's progress lines)
goes to a file, followed by an `exit N` line when the pull has ended however it ended. Polled
with `until: result.finished`, this module says where the pull is (`progress`, the last line)
and, once it has ended, how (`rc`, `output`); the playbooks' `pull_progress` callback prints
`progress` at every poll, so the operator sees each model's percentage while it downloads.
"""

from __future__ import annotations

import re

from ansible.module_utils.basic import AnsibleModule

DOCUMENTATION = r"""
module: ollama_pull_progress
short_description: Where a model pull of the models role has come to
description: Reads the output file of a pull job started by the models role.
options:
  path:
    description: The pull job's output file.
    type: path
    required: true
"""

RETURN = r"""
finished: {description: whether the pull has ended, type: bool}
rc: {description: the pull's exit status once it has ended, type: int}
progress: {description: the last line of output (e.g. "llama3.2 pulling dde5aa3fc5ff 42% of 2.0 GB"), type: str}
output: {description: every line of output, the exit line excluded, type: list}
"""

EXIT_LINE = re.compile(r"^exit (\d+)$")


def main() -> None:
    module = AnsibleModule(argument_spec={"path": {"type": "path", "required": True}},
                           supports_check_mode=True)
    try:
        with open(module.params["path"], encoding="utf-8", errors="replace") as output_file:
            lines = [line.rstrip() for line in output_file if line.strip()]
    except FileNotFoundError:
        lines = []
    ended = EXIT_LINE.match(lines[-1]) if lines else None
    output = lines[:-1] if ended else lines
    module.exit_json(
        changed=False,
        finished=ended is not None,
        rc=int(ended.group(1)) if ended else None,
        progress=output[-1] if output else "starting",
        output=output,
    )


if __name__ == "__main__":
    main()
