"""Studies built on the engine: the paper's experiments, prediction-error studies, load sweeps under online arrivals.

* :mod:`~workbench.studies.experiments` - the headline table, the 100-case study, the ``mu`` sweep;
* :mod:`~workbench.studies.uncertainty` - predicted output lengths and work stealing;
* :mod:`~workbench.studies.loadsweep` - online arrivals, cluster capacity, SLOs, load sweeps.
"""
