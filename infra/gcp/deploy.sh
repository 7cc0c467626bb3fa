#!/usr/bin/env bash
# Bot Scheduler on Google Cloud, from zero: run from the repository root, as a project Owner.
#
#   PROJECT=my-project REGION=europe-west1 BOT_IMAGE=europe-docker.pkg.dev/.../meet-teams-bot:latest \
#   API_KEYS='ck_live_4f9a2e:tenantA,ck_live_7b1c3d:tenantB' bash infra/gcp/deploy.sh
#
# Creates (idempotently where gcloud allows): the APIs; three service accounts: the scheduler's
# (both functions run as it), the bots' (the Cloud Run job runs as it; it has no role) and the
# builds' (Cloud Build builds the functions as it); the Firestore database, its indexes and the
# field exemption; the Cloud Run job that runs the bots; the API keys secret; the two functions
# (HTTP API and Pub/Sub drain); the Pub/Sub topic and the Cloud Scheduler job that ticks it.
#
# Each role is bound where it is used: run.developer on the bot job, iam.serviceAccountUser on
# the bots' service account, secretmanager.secretAccessor on the secret, run.invoker on the drain
# function. Project-wide: datastore.user and eventarc.eventReceiver for the scheduler,
# cloudbuild.builds.builder for the builds.
#
# DRY_RUN=1 prints every gcloud command instead of running it (on stderr, one per line, quoted
# for a shell), as for a new project; DRY_RUN=existing as for one where everything exists.
set -euo pipefail

: "${PROJECT:?set PROJECT}" "${REGION:?set REGION}" "${BOT_IMAGE:?set BOT_IMAGE}"
: "${API_KEYS:?set API_KEYS (key:tenant,...)}"
DRY_RUN=${DRY_RUN:-}
JOB=${JOB:-meeting-bot}
SA_NAME=${SA_NAME:-botsched}
BOT_SA_NAME=${BOT_SA_NAME:-botsched-bot}
BUILD_SA_NAME=${BUILD_SA_NAME:-botsched-build}
SA="$SA_NAME@$PROJECT.iam.gserviceaccount.com"
BOT_SA="$BOT_SA_NAME@$PROJECT.iam.gserviceaccount.com"
BUILD_SA="$BUILD_SA_NAME@$PROJECT.iam.gserviceaccount.com"
FIRESTORE_LOCATION=${FIRESTORE_LOCATION:-eur3}
COLLECTION=${COLLECTION:-botsched_jobs}
BOT_CPU=${BOT_CPU:-1}
BOT_MEMORY=${BOT_MEMORY:-2Gi}
BOT_TIMEOUT=${BOT_TIMEOUT:-4h}
RETRY_DELAY=${RETRY_DELAY:-5}  # seconds, times the attempt
exec 3>&2  # the dry run's output: stderr, even where a command's own output is silenced

g() {
  if [ -n "$DRY_RUN" ]; then
    [ -p /dev/stdin ] && cat >/dev/null  # what a real run would read (the secret)
    printf '%q ' gcloud "$@" --project "$PROJECT" --quiet >&3
    printf '\n' >&3
    return 0
  fi
  gcloud "$@" --project "$PROJECT" --quiet
}
step() { echo "==> $*"; }
exists() {
  if [ -n "$DRY_RUN" ]; then
    "$@"
    [ "$DRY_RUN" = existing ]
    return
  fi
  "$@" >/dev/null 2>&1
}
# IAM is eventually consistent: a service account created seconds ago may not be grantable yet.
retry() {
  local attempt
  for attempt in 1 2 3 4 5; do
    "$@" && return 0
    echo "    not yet (IAM propagates); retrying in $((attempt * RETRY_DELAY))s" >&2
    sleep $((attempt * RETRY_DELAY))
  done
  "$@"
}
service_account() {  # name, display name
  exists g iam service-accounts describe "$1@$PROJECT.iam.gserviceaccount.com" ||
    g iam service-accounts create "$1" --display-name "$2"
}
grant_project() {  # member, role
  retry g projects add-iam-policy-binding "$PROJECT" --member "$1" --role "$2" \
    --condition None >/dev/null
}

step "enabling APIs"
g services enable iam.googleapis.com cloudresourcemanager.googleapis.com \
  cloudfunctions.googleapis.com run.googleapis.com cloudbuild.googleapis.com \
  artifactregistry.googleapis.com eventarc.googleapis.com pubsub.googleapis.com \
  cloudscheduler.googleapis.com secretmanager.googleapis.com firestore.googleapis.com

step "service accounts $SA, $BOT_SA, $BUILD_SA"
service_account "$SA_NAME" "Bot Scheduler"
service_account "$BOT_SA_NAME" "Bot Scheduler bots (no roles)"
service_account "$BUILD_SA_NAME" "Bot Scheduler builds"
# Firestore documents; receive Eventarc deliveries (the drain's Pub/Sub trigger).
grant_project "serviceAccount:$SA" roles/datastore.user
grant_project "serviceAccount:$SA" roles/eventarc.eventReceiver
# New projects build with an under-permissioned default: build as this account instead.
grant_project "serviceAccount:$BUILD_SA" roles/cloudbuild.builds.builder

step "Firestore database, indexes and the field exemption"
exists g firestore databases describe --database '(default)' ||
  g firestore databases create --database '(default)' --location "$FIRESTORE_LOCATION" \
    --type firestore-native
ix() {
  g firestore indexes composite create --database '(default)' --collection-group "$COLLECTION" \
    --query-scope collection --async "$@" >/dev/null 2>&1 || true  # exists: fine
}
ix --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=tenant,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=state,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=tenant,order=ascending --field-config field-path=state,order=ascending \
   --field-config field-path=created_ms,order=descending --field-config field-path=id,order=descending
ix --field-config field-path=deadline_queued_ms,order=ascending \
   --field-config field-path=id,order=ascending
# `data` (the job's JSON) is never queried: no single-field indexes on it; nor on the records'
# `data` and `write` (events, webhooks, deliveries, attempts: one collection each).
g firestore indexes fields update data --database '(default)' --collection-group "$COLLECTION" \
  --disable-indexes --async >/dev/null
for kind in event webhook delivery attempt lead meeting reservation external; do
  for field in data write; do
    g firestore indexes fields update "$field" --database '(default)' \
      --collection-group "${COLLECTION}_rec_$kind" --disable-indexes --async >/dev/null
  done
done

# No retries, ever: a retried task would send a bot into its meeting a second time, and a run
# cannot turn them off (the cloudrun backend refuses to start on a job that retries). Each run
# sets its own timeout (maxRuntimeSeconds); BOT_TIMEOUT is the job's, for runs started by hand.
step "Cloud Run job $JOB (one task, no retries: the scheduler retries), run as $BOT_SA"
if exists g run jobs describe "$JOB" --region "$REGION"; then
  g run jobs update "$JOB" --region "$REGION" --image "$BOT_IMAGE" --service-account "$BOT_SA" \
    --max-retries 0
else
  g run jobs create "$JOB" --region "$REGION" --image "$BOT_IMAGE" --tasks 1 --max-retries 0 \
    --task-timeout "$BOT_TIMEOUT" --cpu "$BOT_CPU" --memory "$BOT_MEMORY" \
    --service-account "$BOT_SA"
fi
# Run it with overrides, read and cancel its executions: this job only.
retry g run jobs add-iam-policy-binding "$JOB" --region "$REGION" \
  --member "serviceAccount:$SA" --role roles/run.developer >/dev/null
# Running the job acts as its service account: this account only.
retry g iam service-accounts add-iam-policy-binding "$BOT_SA" \
  --member "serviceAccount:$SA" --role roles/iam.serviceAccountUser >/dev/null

step "API keys secret"
if exists g secrets describe botsched-api-keys; then
  printf %s "$API_KEYS" | g secrets versions add botsched-api-keys --data-file=-
else
  printf %s "$API_KEYS" | g secrets create botsched-api-keys --data-file=-
fi
retry g secrets add-iam-policy-binding botsched-api-keys --member "serviceAccount:$SA" \
  --role roles/secretmanager.secretAccessor >/dev/null

ENV="SCHEDULER_STORE=firestore,FIRESTORE_COLLECTION=$COLLECTION,PLATFORM=cloudrun"
ENV="$ENV,GCP_PROJECT_ID=$PROJECT,GCP_REGION=$REGION,GCP_JOB_NAME=$JOB"
BUILD="projects/$PROJECT/serviceAccounts/$BUILD_SA"

step "function botsched-api (HTTP)"
g functions deploy botsched-api --gen2 --runtime python311 --region "$REGION" --source . \
  --entry-point api --trigger-http --allow-unauthenticated --service-account "$SA" \
  --build-service-account "$BUILD" --set-env-vars "$ENV" \
  --set-secrets SCHEDULER_API_KEYS=botsched-api-keys:latest

step "topic and function botsched-drain (Pub/Sub tick)"
exists g pubsub topics describe botsched-tick || g pubsub topics create botsched-tick
g functions deploy botsched-drain --gen2 --runtime python311 --region "$REGION" --source . \
  --entry-point drain --trigger-topic botsched-tick --timeout 120s --service-account "$SA" \
  --trigger-service-account "$SA" --build-service-account "$BUILD" \
  --set-env-vars "$ENV,SCHEDULER_TICK_WINDOW_SECONDS=45"
# The trigger delivers as $SA: it may invoke this function, and no other.
retry g functions add-invoker-policy-binding botsched-drain --region "$REGION" \
  --member "serviceAccount:$SA" >/dev/null

step "Cloud Scheduler job botsched-tick (every minute)"
exists g scheduler jobs describe botsched-tick --location "$REGION" ||
  g scheduler jobs create pubsub botsched-tick --location "$REGION" --schedule "* * * * *" \
    --topic botsched-tick --message-body tick

URL=$(g functions describe botsched-api --gen2 --region "$REGION" --format 'value(serviceConfig.uri)')
echo "done: the API is at $URL (try: curl -s $URL/health)"
