"""The AWS Lambda demo's deploy parts, checked offline.

- infra/aws/template.yaml passes cfn-lint (AWS's own CloudFormation linter, with the resource
  schemas bundled in the PyPI package: no account or network), and deploys what the README's CLI
  path makes: the function on `handlers.aws.handler`, reserved concurrency 1, a function URL with
  both of its permissions, an EventBridge rule that invokes the function every minute, and the API
  keys in Secrets Manager rather than in the function's settings.
- infra/aws/secrets-wrapper.sh (the function's AWS_LAMBDA_EXEC_WRAPPER) exports the secret's
  entries before the runtime starts; boto3 is a stand-in here, the one Lambda ships is not.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs  # type: ignore[import-untyped]
from cfnlint.api import lint as cfn_lint
from cfnlint.decode import cfn_yaml  # type: ignore[import-untyped]

from core.config import variable_names
from handlers import aws

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "aws" / "template.yaml"
WRAPPER = ROOT / "infra" / "aws" / "secrets-wrapper.sh"
REGIONS = ["us-east-1", "eu-west-1"]


def lint(text: str) -> list[str]:
    matches = cfn_lint(text, config=ManualArgs(regions=REGIONS))
    return [f"{m.rule.id} line {m.linenumber}: {m.message}" for m in matches]


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = cfn_yaml.loads(TEMPLATE.read_text())
    return loaded


def resources(template: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [r["Properties"] for r in template["Resources"].values() if r["Type"] == kind]


def test_template_passes_cfn_lint() -> None:
    assert lint(TEMPLATE.read_text()) == []


def test_cfn_lint_checks_against_the_resource_schemas() -> None:
    broken = TEMPLATE.read_text().replace(
        "ReservedConcurrentExecutions: 1", "ReservedConcurrentExecutions: one"
    )
    assert any(problem.startswith("E3012") for problem in lint(broken))


def test_the_function_runs_the_handler_in_one_container(template: dict[str, Any]) -> None:
    (function,) = resources(template, "AWS::Lambda::Function")
    module, name = function["Handler"].rsplit(".", 1)
    assert module == aws.__name__
    assert callable(getattr(aws, name))
    assert function["Runtime"].startswith("python3.")
    assert int(function["Runtime"].removeprefix("python3.")) >= 11
    assert function["ReservedConcurrentExecutions"] == 1
    assert function["Environment"]["Variables"]["SCHEDULER_STORE"] == "sqlite"


def test_an_eventbridge_rule_drains_every_minute(template: dict[str, Any]) -> None:
    (rule,) = resources(template, "AWS::Events::Rule")
    assert rule["ScheduleExpression"] == "rate(1 minute)"
    assert [t["Arn"] for t in rule["Targets"]] == [{"Fn::GetAtt": ["Function", "Arn"]}]
    permissions = resources(template, "AWS::Lambda::Permission")
    (events,) = [p for p in permissions if p["Principal"] == "events.amazonaws.com"]
    assert events["Action"] == "lambda:InvokeFunction"
    assert events["SourceArn"] == {"Fn::GetAtt": ["Drain", "Arn"]}


def test_a_public_function_url_with_both_permissions(template: dict[str, Any]) -> None:
    (url,) = resources(template, "AWS::Lambda::Url")
    assert url["AuthType"] == "NONE"
    public = [p for p in resources(template, "AWS::Lambda::Permission") if p["Principal"] == "*"]
    assert {p["Action"] for p in public} == {"lambda:InvokeFunctionUrl", "lambda:InvokeFunction"}
    invoke = next(p for p in public if p["Action"] == "lambda:InvokeFunction")
    assert invoke["InvokedViaFunctionUrl"] is True


def test_api_keys_come_from_secrets_manager(template: dict[str, Any]) -> None:
    (function,) = resources(template, "AWS::Lambda::Function")
    variables = function["Environment"]["Variables"]
    assert "SCHEDULER_API_KEYS" not in variables
    assert variables["SCHEDULER_SECRETS"] == {"Ref": "Secrets"}
    assert variables["AWS_LAMBDA_EXEC_WRAPPER"] == f"/var/task/{WRAPPER.name}"
    assert os.access(WRAPPER, os.X_OK)
    (secret,) = resources(template, "AWS::SecretsManager::Secret")
    assert "SCHEDULER_API_KEYS" in secret["SecretString"]["Fn::Sub"]
    assert template["Parameters"]["ApiKeys"]["NoEcho"] is True
    (role,) = resources(template, "AWS::IAM::Role")
    (statement,) = [s for p in role["Policies"] for s in p["PolicyDocument"]["Statement"]]
    assert statement["Action"] == "secretsmanager:GetSecretValue"
    assert statement["Resource"] == {"Ref": "Secrets"}  # that secret only
    settings = set(variable_names()) | {"AWS_LAMBDA_EXEC_WRAPPER", "SCHEDULER_SECRETS"}
    assert set(variables) <= settings


# -- the exec wrapper --

FAKE_BOTO3 = """
import json, os

class SecretsManager:
    def get_secret_value(self, SecretId):
        secrets = json.loads(os.environ["FAKE_SECRETS"])
        if SecretId not in secrets:
            raise RuntimeError(f"ResourceNotFoundException: {SecretId}")
        return {"SecretString": secrets[SecretId]}

def client(service):
    assert service == "secretsmanager"
    return SecretsManager()
"""
SHOW = (  # what the "runtime" sees
    "import json, os; "
    "print(json.dumps({k: os.environ.get(k) for k in ('SCHEDULER_API_KEYS', 'OTHER')}))"
)


def wrap(tmp_path: Path, secrets: dict[str, str], **env: str) -> subprocess.CompletedProcess[str]:
    """Run the wrapper as Lambda does (`wrapper <runtime command>`), with a stand-in boto3."""
    (tmp_path / "boto3").mkdir(exist_ok=True)
    (tmp_path / "boto3" / "__init__.py").write_text(FAKE_BOTO3)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    base = {"PATH": path, "PYTHONPATH": str(tmp_path), "FAKE_SECRETS": json.dumps(secrets)}
    return subprocess.run(
        ["/bin/sh", str(WRAPPER), sys.executable, "-c", SHOW], env={**base, **env},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_the_wrapper_exports_the_secrets_entries(tmp_path: Path) -> None:
    value = {"SCHEDULER_API_KEYS": "k3y-4f9a2e:acme", "OTHER": "it's $HOME `x`"}
    done = wrap(tmp_path, {"arn:s": json.dumps(value)}, SCHEDULER_SECRETS="arn:s")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == value  # exported verbatim: no shell expansion


def test_the_wrapper_passes_through_without_a_secret(tmp_path: Path) -> None:
    done = wrap(tmp_path, {}, SCHEDULER_API_KEYS="plain-key-1:acme")
    assert json.loads(done.stdout)["SCHEDULER_API_KEYS"] == "plain-key-1:acme"


@pytest.mark.parametrize("value", [None, json.dumps({"bad name": "x"})])
def test_the_runtime_starts_even_when_the_secret_cannot_be_read(
    tmp_path: Path, value: str | None
) -> None:
    secrets = {} if value is None else {"arn:s": value}
    done = wrap(tmp_path, secrets, SCHEDULER_SECRETS="arn:s")
    assert done.returncode == 0
    assert json.loads(done.stdout)["SCHEDULER_API_KEYS"] is None  # the app then says config_error
    assert "could not load arn:s" in done.stderr
