# The SageMaker inference image: the same serving app as the local endpoint
# (retrainer/serving/container.py), run the way SageMaker runs containers: `docker run <image> serve`,
# the model extracted under /opt/ml/model, HTTP on port 8080 (GET /ping, POST /invocations).
#
#   docker build -t retrainer-serving .
#   docker tag retrainer-serving <account>.dkr.ecr.<region>.amazonaws.com/retrainer-serving:<tag>
#   docker push ...; then set aws.inference_image_uri to that URI and aws.pseudonym_key_secret to the
#   Secrets Manager secret holding the pseudonym key (README: "Running on AWS").
#
# Pin scikit-learn/xgboost to the training image's versions so pickled models load alike.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 RETRAINER_HOME=/tmp/retrainer
WORKDIR /opt/retrainer

COPY deployments/serving-requirements.txt /opt/retrainer/serving-requirements.txt
RUN pip install -r serving-requirements.txt

# the package and the model specs only (no flows, tasks, tests, data)
COPY retrainer /opt/retrainer/retrainer
COPY models /opt/retrainer/models
ENV PYTHONPATH=/opt/retrainer

# SageMaker runs containers as root unless told otherwise; the app needs no privilege
RUN useradd --system --uid 10001 --home-dir /tmp/retrainer retrainer
USER 10001

EXPOSE 8080
ENTRYPOINT ["python", "-m", "retrainer.serving.container"]
CMD ["serve"]
