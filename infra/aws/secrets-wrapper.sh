#!/bin/sh
# Lambda exec wrapper (AWS_LAMBDA_EXEC_WRAPPER=/var/task/secrets-wrapper.sh). Before the Python
# runtime starts, it reads the Secrets Manager secret named by SCHEDULER_SECRETS (an ARN or a name)
# and exports each entry of its value, a JSON object such as {"SCHEDULER_API_KEYS": "key:tenant"},
# as an environment variable: API keys (and connection strings) are never plain settings of the
# function. It uses the AWS SDK that Lambda's Python runtime ships (boto3).
#
# If the secret cannot be read, the runtime starts anyway and the reason is in the log: the app then
# answers 500 config_error naming the missing setting, and the next cold start tries again.
if [ -n "${SCHEDULER_SECRETS:-}" ]; then
  if exports=$(PYTHONPATH="/var/runtime${PYTHONPATH:+:$PYTHONPATH}" python3 - <<'PY'
import json
import os
import re
import shlex
import sys

import boto3

secret = boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["SCHEDULER_SECRETS"])
for name, value in json.loads(secret["SecretString"]).items():
    if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", name):
        sys.exit(f"not an environment variable name: {name!r}")
    print(f"export {name}={shlex.quote(str(value))}")
PY
  ); then
    eval "$exports"
  else
    echo "secrets-wrapper: could not load ${SCHEDULER_SECRETS} from Secrets Manager" >&2
  fi
fi
exec "$@"
