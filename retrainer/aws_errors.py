"""One-line wording of AWS errors (botocore ClientError and the like), shared by the SageMaker
backend and `retrainer.client`; no boto3 import."""
from __future__ import annotations

from typing import Any


def one_line(text: Any, limit: int = 400) -> str:
    s = " ".join(str(text).split())
    return s if len(s) <= limit else s[: limit - 3] + "..."


def error_code(exc: BaseException) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def error_message(exc: BaseException) -> str:
    return one_line(getattr(exc, "response", {}).get("Error", {}).get("Message", "") or exc, 200)
