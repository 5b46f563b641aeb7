"""The MLflow pyfunc every trained model is logged as. It imports only MLflow, pandas and the trainer's models (no
Spark), so Model Serving and `mlflow.pyfunc.load_model` can load a model with the packaged code alone."""

from __future__ import annotations

import mlflow
import pandas as pd

from ontos_pipeline.train.trainer.models import ResponseModel


class OntosPyfunc(mlflow.pyfunc.PythonModel):
    """Item columns in; one {"response", "confidence"} per row out (the response validates against the schema)."""

    def __init__(self, model: ResponseModel):
        self.model = model

    def predict(self, context, model_input: pd.DataFrame, params=None) -> list[dict]:
        return self.model.predict(model_input)
