pytest_plugins = [
    "imagen_pipeline_tests.fixtures.alerts",
    "imagen_pipeline_tests.fixtures.imagen",
    "imagen_pipeline_tests.fixtures.postgres",
    "imagen_pipeline_tests.fixtures.celery",
    "imagen_pipeline_tests.fixtures.daemon",
]
