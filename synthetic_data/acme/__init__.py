"""One module per Acme Instruments demo use case; see synthetic_data/generator.py for the contract.

Each module declares its tables as the use-case spec does (PREFIX, PRIMARY, COLUMNS, DIMENSIONS, LABELS) and
implements ``dimensions(rng, rows)`` (small dimension tables, plus hidden "_" columns the blocks may use) and
``block(ctx)`` (one block of primary rows and their labels).
"""
