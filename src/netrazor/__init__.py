"""netrazor: find the parsimonious network inside an over-parameterised one.

The package is organised as one direction of flow (see DESIGN.md):
data -> models -> train -> methods/surgery -> quant/codec -> pipeline/report.
The library never prints; it logs under the ``netrazor`` logger.
"""

import logging

from netrazor.errors import NetrazorError

__version__ = "0.1.0"
__all__ = ["NetrazorError", "__version__"]

logging.getLogger("netrazor").addHandler(logging.NullHandler())
