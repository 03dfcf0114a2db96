"""The numbered steps and what runs them.

Modules:
    table       the step table: every step declared once (number, script, module, reads, writes, owns)
    config      the run configuration by section; presets: named instances of it
    flags       the command line (simple_parsing); resolve: typed flags → Config, ownership, run_id
    store       the outputs folder (paths, memmaps, atomic writes)
    results     the typed stage results; document: the results document and the layers summary
    context     what a step gets (StepContext) and how the config becomes a source of activations
    cli         main() of the numbered scripts and run_pipeline.py
    s01_setup … s08_report   one module per step, each with ``run(ctx)``
    report, markdown, plots  the results document, its pages and its figures
    readme      README tables generated from runs' results; synthetic: start a run at step 03
"""
