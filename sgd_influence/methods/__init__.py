"""Influence methods behind one seam (see :mod:`.base`): Hara and Ours (:mod:`.sgd`),
IF (:mod:`.influence_function`), TracIn and its self-influence TracInSelf
(:mod:`.tracin`), IF's self-influence IFSelf (:mod:`.if_self`), the controls CL (confident learning, :mod:`.confident`) and Random
(:mod:`.control`).
A method is one module that registers its object."""

from . import sgd  # noqa: F401,I001  (registers Hara and Ours, in this order)
from . import influence_function  # noqa: F401,E402  (registers IF)
from . import tracin  # noqa: F401,E402  (registers TracIn and TracInSelf)
from . import if_self  # noqa: F401,E402  (registers IFSelf)
from . import confident  # noqa: F401,E402  (registers CL)
from . import control  # noqa: F401,E402  (registers Random after them)
from .base import Context, Method, get, names, register
from .grads import PER_SAMPLE_MODES, GradientOps, choose_per_sample
from .walks import BN_INFLUENCE, U_GROWTH_WARN, walk, walk_exact, walk_reference

__all__ = ["BN_INFLUENCE", "Context", "GradientOps", "Method", "PER_SAMPLE_MODES",
           "U_GROWTH_WARN", "choose_per_sample", "get", "names", "register", "walk", "walk_exact",
           "walk_reference"]
