"""The numbered steps and what runs them.

Modules:
    table       the step table: every step declared once (number, script, module, reads, writes, owns)
    config      the run configuration by section, and the presets; flags: the command line
    store       the outputs folder (paths, memmaps, atomic writes); results: the typed stage results
    context     what a step gets (StepContext) and how the config becomes a source of activations
    cli         main() of the numbered scripts and run_pipeline.py
    s01_setup … s08_report   one module per step, each with ``run(ctx)``
    report, markdown, plots  the results document, its pages and its figures
    readme      README tables generated from a run's results
"""
