pytest_plugins = ["imagen_pipeline_tests.fixtures.imagen"]
