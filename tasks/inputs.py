"""What the check, stage and image steps read from a stack besides files: the values
their ``config_changed`` and completion stamps record.

check and image do not depend on the stack files themselves: a comment or description
edit must not rebuild an overlay. They depend on these settings instead (and on the
lock, the step records and the base's image files as file_dep).
"""

from __future__ import annotations

import dataclasses
from typing import Any

from overlays.stack import Stack
from tasks.stackinfo import StackInfo, base_tree_digest


def _base_inputs(stack: Stack) -> dict[str, Any]:
    base = stack.base
    return {
        "id": base.id,
        "image": str(base.image),
        "overlays": [str(p) for p in base.overlays],
        "lib_dirs": list(base.lib_dirs),
        "tree": base_tree_digest(base.image),
    }


def check_inputs(info: StackInfo) -> Any:
    """The stack settings the check step reads."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    # the same object the check step checks with (overlays/pipeline.check)
    return {"policy": stack.check_policy().inputs(), "base": _base_inputs(stack)}


def stage_inputs(info: StackInfo) -> Any:
    """The stack settings the stage step reads: the base it installs into, whether it
    drops tool executables (the class) and which it keeps, what the host provides."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    return {
        "class": stack.klass,
        "base": _base_inputs(stack),
        "keep_executable": [dataclasses.asdict(k) for k in stack.keep_executables],
        # the caches pass leaves a folder the host provides to the host's cache
        "host_provides": list(stack.base.host_provides),
    }


def image_inputs(info: StackInfo) -> Any:
    """The stack settings the image step reads (what goes into the image and manifest)."""
    stack = info.stack
    if stack is None:
        return {"error": info.error.message if info.error else "not loaded"}
    return {
        "class": stack.klass,
        "compression": stack.compression,
        "base": _base_inputs(stack),
        "files": info.stack_files,
    }
