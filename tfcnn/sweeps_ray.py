"""Ray Tune as the cluster backend of tfcnn.experiments (--backend ray): the same grid or search as Tune trials."""
from tfcnn.errors import TfcnnError


def _ray():
    try:
        import ray
        from ray import tune
    except ModuleNotFoundError:
        raise TfcnnError("--backend ray needs Ray Tune, which is not installed: pip install 'tfcnn[sweeps]' "
                         "(ray[tune]==2.60.0)") from None
    return ray, tune


def run(name, *, search=False, **kwargs):
    _ray()
    raise TfcnnError("--backend ray is not implemented yet; use the default --backend optuna")
