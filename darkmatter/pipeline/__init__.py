"""The numbered steps and what runs them: a hall of top-level modules and four rooms.

The hall (what turns a command line into steps):
    table       the step table: every step declared once (number, script, module, reads, writes, owns)
    config      the run configuration by section; presets: named instances of it
    flags       the command line (simple_parsing); resolve: typed flags → Config, ownership, run_id;
                validate: the config's own consistency
    context     what a step gets (StepContext) and how the config becomes a source of activations
    inputs, currency   fingerprints of local inputs; whether a step's outputs are current
    cli         main() of the numbered scripts, run_pipeline.py and the ``darkmatter`` command
    synthetic   start a run at step 03 from given arrays (tests, benchmarks)

The rooms (``tests/test_architecture.py`` holds their import rules):
    results/    the typed stage results and the results document; imports no other room
    storage/    the outputs folder: store, journal (commits), shards, checkpoints, the writer lock
    report/     what people read: report.md, plots, the dashboard, README tables; imports results only
    steps/      s01_setup … s08_report (each ``run(ctx)``) and the parts they share
"""
