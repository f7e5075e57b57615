"""earshot library: data, models, training, evaluation and tracking.

Nothing in this package does I/O at import time; every module is safe to import
from tests, notebooks, Prefect tasks and DVC stage entry points alike.
"""

__version__ = "0.1.0"
