"""Shared adapters every stage uses: the lakehouse (local Delta and Unity Catalog), the model store, DDL and table
names, identifiers, the local Spark engine and thread limits."""
