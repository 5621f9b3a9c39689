from .defaults import setup_config  # noqa: F401
from .trainer import UltrasoundTrainer  # noqa: F401
