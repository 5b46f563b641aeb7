"""The Databricks target: settings, Pipes steps, Unity Catalog tables, Model Serving."""
