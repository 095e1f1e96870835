"""trainlab — train neural networks well, and see why it works.

``trainlab.fit(model, (x, y), ...)`` trains your own model through trainlab's loop;
``trainlab.load_run(folder)`` reads a run back; ``trainlab.predict(run, inputs)`` gives its
predictions on new inputs; ``trainlab.ensemble(folders)`` scores the average of several
runs' predictions. The packages: ``trainlab.optim``, ``trainlab.data``,
``trainlab.models``, ``trainlab.train``, ``trainlab.diagnose``, ``trainlab.lab``,
``trainlab.sweep`` and ``trainlab.ensembles``.
"""

__version__ = "0.1.0"


def __getattr__(name: str):  # fit, load_run, predict, ensemble import torch: only when asked for
    if name in ("fit", "load_run", "predict"):
        from .train import api

        return getattr(api, name)
    if name == "ensemble":
        from . import ensembles

        return ensembles.ensemble
    raise AttributeError(f"module 'trainlab' has no attribute {name!r}")


__all__ = ["ensemble", "fit", "load_run", "predict"]
