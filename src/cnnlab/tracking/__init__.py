"""MLflow glue: where runs go, what they are called, which tags and params they carry."""
