#!/usr/bin/env bash
# Bot Scheduler on Google Cloud, from zero: run from the repository root.
#
#   PROJECT=my-project REGION=europe-west1 BOT_IMAGE=europe-docker.pkg.dev/.../meet-teams-bot:latest \
#   API_KEYS='key1:tenantA,key2:tenantB' bash infra/gcp/deploy.sh
#
# Creates (idempotently where gcloud allows): the APIs, a service account with the least roles
# the scheduler needs, the Firestore database and its indexes, the Cloud Run job that runs the
# bots, the API keys secret, the two functions (HTTP API and Pub/Sub drain), the Pub/Sub topic
# and the Cloud Scheduler job that ticks it every minute.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BOT_IMAGE:?set BOT_IMAGE}"
: "${API_KEYS:?set API_KEYS (key:tenant,...)}"
JOB=${JOB:-meeting-bot}
SA_NAME=${SA_NAME:-botsched}
SA="$SA_NAME@$PROJECT.iam.gserviceaccount.com"
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-eur3}
COLLECTION=${COLLECTION:-botsched_jobs}
BOT_CPU=${BOT_CPU:-1}
BOT_MEMORY=${BOT_MEMORY:-2Gi}
BOT_TIMEOUT=${BOT_TIMEOUT:-4h}
g() { gcloud --project "$PROJECT" --quiet "$@"; }
step() { echo "==> $*"; }
exists() { "$@" >/dev/null 2>&1; }

step "enabling APIs"
g services enable cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com \
  cloudscheduler.googleapis.com secretmanager.googleapis.com firestore.googleapis.com

step "service account $SA"
exists g iam service-accounts describe "$SA" ||
  g iam service-accounts create "$SA_NAME" --display-name "Bot Scheduler"
# Firestore documents; run (with overrides), read and cancel executions of the bot job; act as
# the job's runtime identity when running it; receive Eventarc deliveries.
for role in roles/datastore.user roles/run.developer roles/iam.serviceAccountUser \
            roles/run.invoker roles/eventarc.eventReceiver; do
  g projects add-iam-policy-binding "$PROJECT" --member "serviceAccount:$SA" --role "$role" \
    --condition None >/dev/null
done

step "Firestore database and indexes"
exists g firestore databases describe --database '(default)' ||
  g firestore databases create --database '(default)' --location "$FIRESTORE_LOCATION" \
    --type firestore-native
ix() { g firestore indexes composite create --database '(default)' --collection-group "$COLLECTION" \
         --query-scope collection --async "$@" >/dev/null 2>&1 || true; }  # exists: fine
ix --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=tenant,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=state,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=tenant,order=ascending --field-config field-path=state,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=deadline_queued_ms,order=ascending \
   --field-config field-path=id,order=ascending

step "Cloud Run job $JOB (one task, no retries: the scheduler retries)"
if exists g run jobs describe "$JOB" --region "$REGION"; then
  g run jobs update "$JOB" --region "$REGION" --image "$BOT_IMAGE"
else
  g run jobs create "$JOB" --region "$REGION" --image "$BOT_IMAGE" --tasks 1 --max-retries 0 \
    --task-timeout "$BOT_TIMEOUT" --cpu "$BOT_CPU" --memory "$BOT_MEMORY" --service-account "$SA"
fi

step "API keys secret"
if exists g secrets describe botsched-api-keys; then
  printf %s "$API_KEYS" | g secrets versions add botsched-api-keys --data-file=-
else
  printf %s "$API_KEYS" | g secrets create botsched-api-keys --data-file=-
fi
g secrets add-iam-policy-binding botsched-api-keys --member "serviceAccount:$SA" \
  --role roles/secretmanager.secretAccessor >/dev/null

ENV="SCHEDULER_STORE=firestore,FIRESTORE_COLLECTION=$COLLECTION,PLATFORM=cloudrun"
ENV="$ENV,GCP_PROJECT_ID=$PROJECT,GCP_REGION=$REGION,GCP_JOB_NAME=$JOB"

step "function botsched-api (HTTP)"
g functions deploy botsched-api --gen2 --runtime python311 --region "$REGION" --source . \
  --entry-point api --trigger-http --allow-unauthenticated --service-account "$SA" \
  --set-env-vars "$ENV" --set-secrets SCHEDULER_API_KEYS=botsched-api-keys:latest

step "topic and function botsched-drain (Pub/Sub tick)"
exists g pubsub topics describe botsched-tick || g pubsub topics create botsched-tick
g functions deploy botsched-drain --gen2 --runtime python311 --region "$REGION" --source . \
  --entry-point drain --trigger-topic botsched-tick --timeout 120s --service-account "$SA" \
  --trigger-service-account "$SA" --set-env-vars "$ENV,SCHEDULER_TICK_WINDOW_SECONDS=45"

step "Cloud Scheduler job botsched-tick (every minute)"
exists g scheduler jobs describe botsched-tick --location "$REGION" ||
  g scheduler jobs create pubsub botsched-tick --location "$REGION" --schedule "* * * * *" \
    --topic botsched-tick --message-body tick

URL=$(g functions describe botsched-api --gen2 --region "$REGION" --format 'value(serviceConfig.uri)')
echo "done: the API is at $URL (try: curl -s $URL/health)"
