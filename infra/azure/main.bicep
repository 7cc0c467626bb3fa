// Bot Scheduler on Azure: what one deployment needs.
//
//   storage account + table  (the job store, and the Functions host's own storage)
//   Container Apps environment + a manual-trigger job  (one execution per bot)
//   Function App (Python, Linux, consumption) with a system-assigned identity
//   role assignments: the function may start/stop/read executions of that job, and use the table
//
// Deploy: see infra/azure/README.md.

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

var suffix = uniqueString(resourceGroup().id)
var storageName = take('${prefix}${suffix}', 24)
var tableName = 'botschedjobs'
var jobName = '${prefix}-bot'

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
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

resource tables 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource jobsTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tables
  name: tableName
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: '${prefix}-logs-${suffix}'
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource containerEnv 'Microsoft.App/managedEnvironments@2024-03-01' = {
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

resource botJob 'Microsoft.App/jobs@2024-03-01' = {
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

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  name: '${prefix}-plan'
  location: location
  kind: 'functionapp'
  sku: { name: 'Y1', tier: 'Dynamic' }
  properties: { reserved: true }
}

var storageConnection = 'DefaultEndpointsProtocol=https;AccountName=${storage.name};EndpointSuffix=${environment().suffixes.storage};AccountKey=${storage.listKeys().keys[0].value}'

resource functionApp 'Microsoft.Web/sites@2023-12-01' = {
  name: '${prefix}-func-${suffix}'
  location: location
  kind: 'functionapp,linux'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      linuxFxVersion: 'Python|3.11'
      minTlsVersion: '1.2'
      appSettings: [
        { name: 'AzureWebJobsStorage', value: storageConnection }
        { name: 'FUNCTIONS_EXTENSION_VERSION', value: '~4' }
        { name: 'FUNCTIONS_WORKER_RUNTIME', value: 'python' }
        { name: 'AzureWebJobsFeatureFlags', value: 'EnableWorkerIndexing' }
        { name: 'SCHEDULER_STORE', value: 'azure_table' }
        { name: 'AZURE_STORAGE_ACCOUNT_URL', value: storage.properties.primaryEndpoints.table }
        { name: 'AZURE_TABLE_NAME', value: tableName }
        { name: 'PLATFORM', value: 'azure' }
        { name: 'AZURE_SUBSCRIPTION_ID', value: subscription().subscriptionId }
        { name: 'AZURE_RESOURCE_GROUP', value: resourceGroup().name }
        { name: 'AZURE_JOB_NAME', value: jobName }
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

// The function's identity may read the job, start it, and read and stop its executions.
resource jobsOperator 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: guid(resourceGroup().id, 'botsched-jobs-operator')
  properties: {
    roleName: 'Bot Scheduler jobs operator (${resourceGroup().name})'
    description: 'Start Container Apps job executions, read them and stop them.'
    type: 'CustomRole'
    assignableScopes: [ resourceGroup().id ]
    permissions: [
      {
        // start, and stop of an execution, are POST actions on the job
        actions: [
          'Microsoft.App/jobs/read'
          'Microsoft.App/jobs/*/action'
          'Microsoft.App/jobs/executions/read'
        ]
      }
    ]
  }
}

resource startExecutions 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(botJob.id, functionApp.id, jobsOperator.id)
  scope: botJob
  properties: {
    roleDefinitionId: jobsOperator.id
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

// Storage Table Data Contributor, so the store reaches the table with the managed identity.
var tableDataContributor = subscriptionResourceId(
  'Microsoft.Authorization/roleDefinitions', '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3')

resource useTable 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, functionApp.id, tableDataContributor)
  scope: storage
  properties: {
    roleDefinitionId: tableDataContributor
    principalId: functionApp.identity.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = functionApp.name
output apiBaseUrl string = 'https://${functionApp.properties.defaultHostName}'
output jobName string = botJob.name
output storageAccount string = storage.name
