"""A removable hook on one bound method of one object, for calls no module hook sees.

``generate()`` encodes a multimodal model's images through its ``get_image_features`` method and
pops the image kwargs before the prefill forward; when the vision tower's own call does not carry
everything a family needs to map slots (LLaVA-OneVision's image sizes), that method is the one
place that sees them. The hook is an instance attribute shadowing the class's method: it holds no
parameters (ZeRO-3 and ``save_pretrained`` do not notice it), keeps the method's signature (so
``generate`` still inspects the right argument names) and ``remove()`` restores the class's.
"""

from __future__ import annotations

import functools
import inspect
from typing import Callable


class MethodHook:
    """After ``obj.name(*args, **kwargs)`` returns, call ``after(arguments_by_name, result)``."""

    def __init__(self, obj, name: str, after: Callable[[dict, object], None]):
        if name in vars(obj):
            raise RuntimeError(f"{type(obj).__name__}.{name} is already hooked on this instance")
        self.obj, self.name = obj, name
        original = getattr(obj, name)
        signature = inspect.signature(original)

        @functools.wraps(original)
        def hooked(*args, **kwargs):
            result = original(*args, **kwargs)
            after(signature.bind_partial(*args, **kwargs).arguments, result)
            return result

        object.__setattr__(obj, name, hooked)  # past nn.Module.__setattr__: a plain attribute

    def remove(self) -> None:
        vars(self.obj).pop(self.name, None)
