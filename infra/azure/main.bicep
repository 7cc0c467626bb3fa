// Bot Scheduler on Azure: what one deployment needs, in one resource group.
//
//   storage account: the job table, the Functions host's blobs (timer locks) and the app package
//   Log Analytics workspace + Application Insights (workspace-based): the bots' console logs and
//     the function's logs, traces and failures
//   Container Apps environment + a manual-trigger job (one execution per bot)
//   Flex Consumption plan + Function App (Python 3.11) with a system-assigned identity
//   built-in roles for that identity: Container Apps Jobs Operator on the job alone, Storage
//     Table Data Contributor on the storage account (assignRoles=false leaves both to an
//     administrator)
//
// No custom role is created. Deploy: see infra/azure/README.md. The API versions are those of
// the official Azure SDK models tests/deploy/test_azure_template.py validates every resource with.

targetScope = 'resourceGroup'

@description('Short prefix for resource names (lowercase letters and digits).')
@minLength(3)
@maxLength(11)
param prefix string = 'botsched'

param location string = resourceGroup().location

@description('The bot image each execution runs.')
param botImage string = 'meet-teams-bot:latest'

@description('CPU and memory of one bot (a pair Container Apps accepts, e.g. 1 / 2Gi).')
param botCpu string = '1'
param botMemory string = '2Gi'

@description('Longest run of one bot, in seconds.')
param botTimeoutSeconds int = 14400

@description('API keys as key:tenant,key:tenant (at least one).')
@secure()
param apiKeys string

@description('Global concurrency cap.')
param maxConcurrentJobs int = 10

@description('Memory of one Function App instance, in MB (Flex Consumption sizes).')
@allowed([512, 2048, 4096])
param instanceMemoryMB int = 2048

@description('Most instances the Function App scales out to.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@description('Assign the two built-in roles to the function\'s identity. Needs Owner, User Access Administrator or Role Based Access Control Administrator; with false, an administrator assigns them afterwards (see the README).')
param assignRoles bool = true

var suffix = uniqueString(resourceGroup().id)
var storageName = take('${prefix}${suffix}', 24)
var tableName = 'botschedjobs'
var packageContainer = 'app-package'
var jobName = '${prefix}-bot'

// Built-in roles (their IDs are the same in every subscription).
var jobsOperatorRole = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions', 'b9a307c4-5aa3-4b52-ba60-2b17c136cd7b')
var tableDataContributorRole = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')

resource storage 'Microsoft.Storage/storageAccounts@2026-09-01' = {
  name: storageName
  location: location
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    supportsHttpsTrafficOnly: true
  }
}

resource blobs 'Microsoft.Storage/storageAccounts/blobServices@2026-09-01' = {
  parent: storage
  name: 'default'
}

resource packages 'Microsoft.Storage/storageAccounts/blobServices/containers@2026-09-01' = {
  parent: blobs
  name: packageContainer
  properties: { publicAccess: 'None' }
}

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2026-09-01' = {
  parent: storage
  name: 'default'
}

resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2026-09-01' = {
  parent: tables
  name: tableName
}

resource logs 'Microsoft.OperationalInsights/workspaces@2025-07-01' = {
  name: '${prefix}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: '${prefix}-insights-${suffix}'
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
  }
}

resource containerEnv 'Microsoft.App/managedEnvironments@2026-07-01' = {
  name: '${prefix}-env'
  location: location
  properties: {
    appLogsConfiguration: {
      destination: 'log-analytics'
      logAnalyticsConfiguration: {
        customerId: logs.properties.customerId
        sharedKey: logs.listKeys().primarySharedKey
      }
    }
  }
}

resource botJob 'Microsoft.App/jobs@2026-07-01' = {
  name: jobName
  location: location
  properties: {
    environmentId: containerEnv.id
    configuration: {
      triggerType: 'Manual'
      replicaTimeout: botTimeoutSeconds
      replicaRetryLimit: 0
      manualTriggerConfig: {
        parallelism: 1
        replicaCompletionCount: 1
      }
    }
    template: {
      containers: [
        {
          name: 'bot'
          image: botImage
          resources: {
            cpu: json(botCpu)
            memory: botMemory
          }
        }
      ]
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2025-05-01' = {
  name: '${prefix}-plan'
  location: location
  kind: 'functionapp'
  sku: { name: 'FC1', tier: 'FlexConsumption' }
  properties: { reserved: true }
}

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storage.listKeys().keys[0].value}'

resource functionApp 'Microsoft.Web/sites@2025-05-01' = {
  name: '${prefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${packages.name}'
          authentication: {
            type: 'StorageAccountConnectionString'
            storageAccountConnectionStringName: 'DEPLOYMENT_STORAGE_CONNECTION_STRING'
          }
        }
      }
      scaleAndConcurrency: {
        instanceMemoryMB: instanceMemoryMB
        maximumInstanceCount: maximumInstanceCount
      }
      runtime: { name: 'python', version: '3.11' }
    }
    siteConfig: {
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'AzureWebJobsStorage', value: storageConnection }
        { name: 'DEPLOYMENT_STORAGE_CONNECTION_STRING', value: storageConnection }
        { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
        { name: 'SCHEDULER_STORE', value: 'azure_table' }
        { name: 'AZURE_STORAGE_ACCOUNT_URL', value: storage.properties.primaryEndpoints.table }
        { name: 'AZURE_TABLE_NAME', value: jobsTable.name }
        { name: 'PLATFORM', value: 'azure' }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'AZURE_RESOURCE_GROUP', value: resourceGroup().name }
        { name: 'AZURE_JOB_NAME', value: botJob.name }
        { name: 'SCHEDULER_CONTAINER_IMAGE', value: botImage }
        { name: 'SCHEDULER_DEFAULT_CPU', value: botCpu }
        { name: 'SCHEDULER_DEFAULT_MEMORY', value: botMemory }
        { name: 'SCHEDULER_MAX_CONCURRENT_JOBS', value: string(maxConcurrentJobs) }
        { name: 'SCHEDULER_API_KEYS', value: apiKeys }
        { name: 'SCHEDULER_DRAIN_SCHEDULE', value: '*/30 * * * * *' }
        { name: 'SCHEDULER_POLL_SCHEDULE', value: '*/15 * * * * *' }
      ]
    }
  }
}

// Read the job, start it, and read and stop its executions: on this one job only.
resource operateBotJob 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignRoles) {
  name: guid(botJob.id, functionApp.id, jobsOperatorRole)
  scope: botJob
  properties: {
    roleDefinitionId: jobsOperatorRole
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// The store reaches the table with the managed identity (AZURE_STORAGE_ACCOUNT_URL).
resource useTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (assignRoles) {
  name: guid(storage.id, functionApp.id, tableDataContributorRole)
  scope: storage
  properties: {
    roleDefinitionId: tableDataContributorRole
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output apiBaseUrl string = 'https://${functionApp.properties.defaultHostName}'
output principalId string = functionApp.identity.principalId
output jobId string = botJob.id
output jobName string = botJob.name
output storageAccount string = storage.name
output storageAccountId string = storage.id
output applicationInsights string = insights.name
