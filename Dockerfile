# Airflow image with this project's pinned dependencies, for docker-compose.yaml.
FROM apache/airflow:3.3.2-python3.11
USER root
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config default-libmysqlclient-dev build-essential \
    && rm -rf /var/lib/apt/lists/*
USER airflow
COPY --chown=airflow:root requirements.txt constraints.txt pyproject.toml /opt/billing-migration/
COPY --chown=airflow:root include /opt/billing-migration/include
RUN pip install --no-cache-dir -r /opt/billing-migration/requirements.txt -c /opt/billing-migration/constraints.txt \
    && pip install --no-cache-dir --no-deps -e /opt/billing-migration
