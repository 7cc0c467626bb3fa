"""infra/azure/main.bicep against the official Azure API models, offline.

No Bicep compiler can be had offline (it is a .NET tool from NuGet and GitHub), so this is what
is proven instead, and what is not:

- the file is Bicep syntax (tree-sitter-bicep's grammar), and every name an expression uses is
  declared;
- every resource's type is one the official Azure SDK for Python models, its apiVersion is the
  very version that SDK's models were generated from, and its body uses only properties of that
  version's request model, none read-only, none required missing, each of the model's type,
  enums among the known values (tests/deploy/azure_schemas.py);
- every `resource.properties.x` the template reads exists on that resource's model;
- deployment-level rules the models cannot express: no custom role, built-in roles only, Flex
  Consumption's settings, and app settings the app reads and accepts.

Not proven: that ARM accepts the deployment (quotas, region availability, name clashes, what the
service checks beyond its schema) or that the two role IDs are the built-in roles named here
(they are the documented IDs; nothing offline lists Azure's role definitions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.config import _VARIABLES
from handlers.azure import DRAIN_SCHEDULE_SETTING, POLL_SCHEDULE_SETTING, settings_from_env
from tests.deploy.azure_bicep import BicepSyntaxError, Expr, Resource, Template, parse_bicep
from tests.deploy.azure_schemas import (
    RESOURCE_MODELS,
    read_path,
    read_shape,
    resource_shape,
    validate,
)

ROOT = Path(__file__).resolve().parents[2]
BICEP = ROOT / "infra" / "azure" / "main.bicep"
README = ROOT / "infra" / "azure" / "README.md"
# The documented IDs of the built-in roles the function's identity gets.
BUILT_IN_ROLES = {
    "b9a307c4-5aa3-4b52-ba60-2b17c136cd7b": "Container Apps Jobs Operator",
    "0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3": "Storage Table Data Contributor",
}
# App settings Flex Consumption refuses (its functionAppConfig replaces them).
FLEX_REFUSED = {
    "FUNCTIONS_EXTENSION_VERSION",
    "FUNCTIONS_WORKER_RUNTIME",
    "FUNCTIONS_WORKER_RUNTIME_VERSION",
    "WEBSITE_RUN_FROM_PACKAGE",
    "WEBSITE_CONTENTSHARE",
    "WEBSITE_CONTENTAZUREFILECONNECTIONSTRING",
    "WEBSITE_NODE_DEFAULT_VERSION",
}
HOST_SETTINGS = {
    "AzureWebJobsStorage",
    "DEPLOYMENT_STORAGE_CONNECTION_STRING",
    "APPLICATIONINSIGHTS_CONNECTION_STRING",
}
# What the deployment puts where the template has an expression.
DEPLOYED = {
    "AZURE_STORAGE_ACCOUNT_URL": "https://botschedabc.table.core.windows.net/",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "AZURE_RESOURCE_GROUP": "botsched",
    "SCHEDULER_API_KEYS": "ck_live_4f9a2e8b7c1d:acme",
    "SCHEDULER_MAX_CONCURRENT_JOBS": "10",
}


@pytest.fixture(scope="module")
def template() -> Template:
    return parse_bicep(BICEP.read_text())


def by_type(template: Template, resource_type: str) -> list[Resource]:
    return [r for r in template.resources if r.type == resource_type]


def app_settings(template: Template) -> dict[str, Any]:
    (site,) = by_type(template, "Microsoft.Web/sites")
    return {s["name"]: s["value"] for s in site.body["properties"]["siteConfig"]["appSettings"]}


def test_the_template_is_bicep_syntax() -> None:
    parse_bicep(BICEP.read_text())
    with pytest.raises(BicepSyntaxError, match="line"):
        parse_bicep("resource x 'A/b@2020-01-01' = {\n  name: 'x'\n  properties: { a: }\n}\n")


def test_every_name_used_is_declared(template: Template) -> None:
    assert template.names_used - template.declared == set()
    assert parse_bicep("output o string = nothing.id").names_used == {"nothing"}


@pytest.mark.parametrize("symbol", [r.symbol for r in parse_bicep(BICEP.read_text()).resources])
def test_each_resource_fits_the_official_model_of_its_api_version(
    template: Template, symbol: str
) -> None:
    resource = template.resource(symbol)
    assert resource.type in RESOURCE_MODELS, f"{resource.type}: no official model mapped"
    api_version, shape = resource_shape(resource.type)
    assert resource.api_version == api_version, (
        f"{symbol}: {resource.type}@{resource.api_version}, but the installed SDK's models are "
        f"of {api_version}: validate against the version deployed"
    )
    assert "name" in resource.body
    assert validate(resource.rest_body(), shape) == []


def test_the_properties_the_template_reads_exist(template: Template) -> None:
    resources = {r.symbol: r for r in template.resources}
    problems = []
    for path in sorted(template.member_paths):
        resource = resources.get(path[0])
        if resource is None or path[1] in ("id", "name", "type", "apiVersion"):
            continue
        problem = read_path(read_shape(resource.type), path[1:])
        if problem:
            problems.append(f"{'.'.join(path)}: {problem}")
    assert problems == []
    assert ("insights", "properties", "ConnectionString") in template.member_paths


def test_the_validator_finds_what_is_wrong() -> None:
    """The check above is not vacuous: each kind of mistake in a body is reported."""
    broken = parse_bicep(
        """
        param cpu string
        resource app 'Microsoft.Web/sites@2025-05-01' = {
          name: 'x'
          kind: 'functionapp,linux'
          identity: { type: 'SystemAsigned' }
          properties: {
            serverFarmId: 5
            defaultHostName: 'x.azurewebsites.net'
            functionAppConfig: {
              runtime: { name: 'pyton' }
              scaleAndConcurrency: { instanceMemoryMb: 2048 }
            }
            siteConfig: {
              appSettings: [ { name: 'A', value: cpu, slot: true } ]
              numberOfWorkers: cpu
            }
          }
        }
        """
    ).resource("app")
    errors = validate(broken.rest_body(), resource_shape(broken.type)[1])
    expected = [
        "identity.type: 'SystemAsigned' is none of",
        "properties.serverFarmId: 5 is not a str",
        "properties.defaultHostName: read-only",
        "properties.functionAppConfig.runtime.name: 'pyton' is none of",
        "properties.functionAppConfig.scaleAndConcurrency.instanceMemoryMb: not a property",
        "properties.siteConfig.appSettings[0].slot: not a property",
        "properties.siteConfig.numberOfWorkers: cpu is a str, the schema wants int",
        "location: required by Site, missing",
    ]
    for start in expected:
        assert any(e.startswith(start) for e in errors), (start, errors)
    assert len(errors) == len(expected), errors


def test_no_custom_role_only_built_in_roles(template: Template) -> None:
    assert by_type(template, "Microsoft.Authorization/roleDefinitions") == []
    assignments = {
        r.symbol: r for r in by_type(template, "Microsoft.Authorization/roleAssignments")
    }
    assert set(assignments) == {"operateBotJob", "useTable"}
    roles = {}
    for resource in assignments.values():
        assert resource.conditional  # assignRoles=false: a Contributor can deploy the rest
        role = resource.body["properties"]["roleDefinitionId"]
        assert isinstance(role, Expr) and role.text.startswith("subscriptionResourceId(")
        (guid,) = [g for g in BUILT_IN_ROLES if g in role.text]
        roles[resource.symbol] = BUILT_IN_ROLES[guid]
        assert resource.body["properties"]["principalType"] == "ServicePrincipal"
        assert resource.body["name"].text.startswith("guid(")  # the same name on every redeploy
    assert roles == {
        "operateBotJob": "Container Apps Jobs Operator",
        "useTable": "Storage Table Data Contributor",
    }
    assert assignments["operateBotJob"].body["scope"] == Expr("botJob")  # the one job only
    assert assignments["useTable"].body["scope"] == Expr("storage")
    readme = " ".join(README.read_text().split())
    for name in (*BUILT_IN_ROLES.values(), "Role Based Access Control Administrator"):
        assert name in readme


def test_the_function_app_runs_on_flex_consumption(template: Template) -> None:
    (plan,) = by_type(template, "Microsoft.Web/serverfarms")
    (site,) = by_type(template, "Microsoft.Web/sites")
    assert plan.body["sku"] == {"name": "FC1", "tier": "FlexConsumption"}
    assert plan.body["properties"]["reserved"] is True  # Linux
    assert site.body["kind"] == "functionapp,linux"
    config = site.body["properties"]["functionAppConfig"]
    assert config["runtime"] == {"name": "python", "version": "3.11"}
    assert config["scaleAndConcurrency"]["instanceMemoryMB"] == Expr("instanceMemoryMB", "int")
    assert "linuxFxVersion" not in site.body["properties"]["siteConfig"]
    settings = app_settings(template)
    assert FLEX_REFUSED.isdisjoint(settings)
    storage = config["deployment"]["storage"]
    assert storage["type"] == "blobContainer"
    assert "packages.name" in storage["value"].text  # the container the template creates
    assert storage["authentication"]["storageAccountConnectionStringName"] in settings


def test_application_insights_is_workspace_based_and_wired(template: Template) -> None:
    (insights,) = by_type(template, "Microsoft.Insights/components")
    assert insights.body["properties"]["WorkspaceResourceId"] == Expr("logs.id")
    assert app_settings(template)["APPLICATIONINSIGHTS_CONNECTION_STRING"] == Expr(
        "insights.properties.ConnectionString"
    )


def test_the_app_settings_are_ones_the_app_reads_and_accepts(template: Template) -> None:
    settings = app_settings(template)
    known = set(_VARIABLES) | {DRAIN_SCHEDULE_SETTING, POLL_SCHEDULE_SETTING} | HOST_SETTINGS
    assert set(settings) - known == set()
    assert {DRAIN_SCHEDULE_SETTING, POLL_SCHEDULE_SETTING, "SCHEDULER_API_KEYS"} <= set(settings)
    env = {}
    for name, value in settings.items():
        if isinstance(value, Expr) and value.text in template.defaults:
            value = template.defaults[value.text]
        env[name] = DEPLOYED.get(name, value) if isinstance(value, Expr) else value
    env = {k: v for k, v in env.items() if not isinstance(v, Expr)}
    assert set(settings) - set(env) <= HOST_SETTINGS | {"AZURE_TABLE_NAME", "AZURE_JOB_NAME"}
    parsed = settings_from_env(env)
    assert (parsed.store, parsed.platform) == ("azure_table", "azure")


def test_the_bot_job_never_retries_a_replica_and_times_it_out(template: Template) -> None:
    """Container Apps cannot turn retries off per execution (a JobExecutionTemplate holds only
    containers and initContainers): the Job itself must never start a bot a second time
    (core/backends/policy.py); the azure backend refuses to start on one that does."""
    (job,) = by_type(template, "Microsoft.App/jobs")
    configuration = job.body["properties"]["configuration"]
    assert configuration["replicaRetryLimit"] == 0
    assert configuration["replicaTimeout"] == Expr("botTimeoutSeconds", "int")
    assert template.defaults["botTimeoutSeconds"] == 14400
    assert configuration["manualTriggerConfig"]["parallelism"] == 1
