"""Loading initial weights with an error that says what to do when offline."""
import urllib.error

from detectron2.utils.file_io import PathManager


class WeightsUnavailableError(RuntimeError):
    pass


def explain_unreachable_weights(weights, error):
    return WeightsUnavailableError(
        f"MODEL.WEIGHTS={weights!r} could not be fetched ({error}). This machine seems to be offline. "
        "Download the file elsewhere and set MODEL.WEIGHTS to its local path, or train from scratch "
        "with MODEL.WEIGHTS \"\" and a BN/GN config (e.g. configs/phantom/faster_rcnn_R_50_FPN_cpu_300it.yaml): "
        "FrozenBN with random weights does not train."
    )


def fetch_weights(weights):
    """Local path of ``weights`` (downloading a URL once), or a clear error."""
    try:
        return PathManager.get_local_path(weights)
    except (urllib.error.URLError, OSError, ConnectionError) as error:
        raise explain_unreachable_weights(weights, error) from error


def check_weights_reachable(checkpointer, weights, resume):
    """Before ``resume_or_load``: fetch ``weights`` unless a checkpoint will be resumed instead."""
    if weights and not (resume and checkpointer.has_checkpoint()):
        fetch_weights(weights)
