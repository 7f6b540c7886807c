"""The warehouse side of healthpipe: config, landing, validation, transformation, the CLI.

Every step is a plain function that the command line and the Airflow DAGs both call.
"""
