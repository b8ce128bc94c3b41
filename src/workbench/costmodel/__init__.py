"""What an iteration costs: the linear model of MODEL.md section 2, its fit and presets.

* :mod:`~workbench.costmodel.linear` - :class:`LinearCostModel`, :func:`fit`, presets;
* :mod:`~workbench.costmodel.roofline` - the first-principles LLaMA-65B preset;
* :mod:`~workbench.costmodel.calibrate` - presets fitted to measured GPU profiles;
* :mod:`~workbench.costmodel.profiled` - :class:`ProfiledCostModel`, interpolated kernel tables;
* :mod:`~workbench.costmodel.shapes` - the shipped table of model shapes.
"""

from workbench.costmodel.linear import (  # noqa: F401
    COEFFICIENTS,
    COEFFICIENT_UNITS,
    LinearCostModel,
    presets_dir,
    list_presets,
    load_preset,
    save_preset,
    FitResult,
    PROFILE_COLUMNS,
    fit,
)
from workbench.costmodel.profiled import ProfiledCostModel  # noqa: F401  (registers the "profiled" preset kind)

__all__ = ['COEFFICIENTS', 'COEFFICIENT_UNITS', 'FitResult', 'LinearCostModel', 'PROFILE_COLUMNS', 'ProfiledCostModel', 'fit', 'list_presets', 'load_preset', 'presets_dir', 'save_preset']
