{{/* The chart name, or nameOverride. */}}
{{- define "mdops.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
The full name of the objects: fullnameOverride, or the release name (plus the chart name unless the
release name contains it), cut at 63 characters (the DNS label limit of some name fields).
*/}}
{{- define "mdops.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* chart-version, for the helm.sh/chart label. */}}
{{- define "mdops.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels of every object. */}}
{{- define "mdops.labels" -}}
helm.sh/chart: {{ include "mdops.chart" . }}
{{ include "mdops.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mdops
{{- end }}

{{/* Labels that select the controller's pods (immutable in a Deployment: never add to them). */}}
{{- define "mdops.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mdops.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "mdops.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mdops.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest */}}
{{- define "mdops.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* The runner's image: runner.image, falling back to the controller's. */}}
{{- define "mdops.runnerImage" -}}
{{- if or .Values.runner.image.repository .Values.runner.image.tag }}
{{- printf "%s:%s" (default .Values.image.repository .Values.runner.image.repository) (default (default .Chart.AppVersion .Values.image.tag) .Values.runner.image.tag) }}
{{- else }}
{{- include "mdops.image" . }}
{{- end }}
{{- end }}

{{- define "mdops.apiSecretName" -}}
{{- default (printf "%s-api-token" (include "mdops.fullname" .)) .Values.api.existingSecret }}
{{- end }}

{{- define "mdops.simulatorName" -}}
{{- printf "%s-sim" (include "mdops.fullname" .) | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The environment shared by the controller and the API. */}}
{{- define "mdops.commonEnv" -}}
- name: MDOPS_IN_CLUSTER
  value: "true"
- name: MDOPS_NAMESPACE
  valueFrom:
    fieldRef:
      fieldPath: metadata.namespace
- name: MDOPS_TIMEZONE
  value: {{ .Values.calendar.timezone | quote }}
- name: MDOPS_VENUE
  value: {{ .Values.calendar.venue | quote }}
- name: MDOPS_PRE_OPEN_MINUTES
  value: {{ .Values.calendar.preOpenMinutes | quote }}
- name: MDOPS_SESSION_WINDOWS
  value: {{ .Values.calendar.sessionWindows | toJson | quote }}
{{- /* On the pod's /tmp (an emptyDir): a restarted container reads the table instead of building it. */}}
- name: MDOPS_CALENDAR_CACHE
  value: /tmp/mdops-sessions.json
{{- end }}

{{- /* The environment the chart gives each container (controller.extraEnv and api.extraEnv follow it). */}}
{{- define "mdops.controllerEnv" -}}
{{- $local := eq .Values.controller.executor "local" }}
{{- $scripts := .Values.scripts.configMapName }}
{{- include "mdops.commonEnv" . }}
- name: MDOPS_EXECUTOR
  value: {{ .Values.controller.executor | quote }}
- name: MDOPS_METRICS_PORT
  value: {{ .Values.controller.metricsPort | quote }}
- name: MDOPS_LIVENESS_PORT
  value: {{ .Values.controller.livenessPort | quote }}
- name: MDOPS_LEDGER_SIZE
  value: {{ .Values.controller.ledgerSize | quote }}
- name: MDOPS_MAX_UNFINISHED_PER_NAMESPACE
  value: {{ .Values.controller.maxUnfinishedPerNamespace | quote }}
- name: MDOPS_RETENTION_INTERVAL_SECONDS
  value: {{ .Values.controller.retention.intervalSeconds | quote }}
- name: MDOPS_RETENTION_TTL_SECONDS
  value: {{ .Values.controller.retention.ttlSeconds | quote }}
- name: MDOPS_RETENTION_SUCCESSFUL_PER_COMMAND
  value: {{ .Values.controller.retention.successfulPerCommand | quote }}
- name: MDOPS_RETENTION_FAILED_PER_COMMAND
  value: {{ .Values.controller.retention.failedPerCommand | quote }}
- name: MDOPS_GATE_MIN_COVERAGE
  value: {{ .Values.controller.gate.minCoverage | quote }}
- name: MDOPS_GATE_MAX_BACKLOG
  value: {{ .Values.controller.gate.maxBacklog | quote }}
- name: MDOPS_GATE_MAX_FAILOVER_LATENCY_MS
  value: {{ .Values.controller.gate.maxFailoverLatencyMs | quote }}
{{- $scriptEnv := .Values.controller.scriptEnv }}
{{- if .Values.simulator.enabled }}
{{- $scriptEnv = merge (dict) $scriptEnv (dict "MDOPS_SIM_URL" (printf "http://%s:%v" (include "mdops.simulatorName" .) .Values.simulator.port)) }}
{{- end }}
{{- with $scriptEnv }}
- name: MDOPS_SCRIPT_ENV
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.controller.scriptPassEnv }}
- name: MDOPS_SCRIPT_PASS_ENV
  value: {{ toJson . | quote }}
{{- end }}
{{- with .Values.controller.lockGroups }}
- name: MDOPS_LOCK_GROUPS
  value: {{ toJson . | quote }}
{{- end }}
{{- if $local }}
- name: MDOPS_SCRIPTS_DIR
  value: /etc/mdops/scripts
- name: MDOPS_STATE_DIR
  value: /var/lib/mdops
- name: MDOPS_MAX_PARALLEL
  value: {{ .Values.controller.maxParallel | quote }}
- name: MDOPS_RUN_FOLDER_TTL_SECONDS
  value: {{ .Values.controller.runFolderTtlSeconds | quote }}
{{- else }}
- name: MDOPS_RUNNER_IMAGE
  value: {{ include "mdops.runnerImage" . | quote }}
{{- with $scripts }}
- name: MDOPS_SCRIPTS_CONFIGMAP
  value: {{ . | quote }}
{{- end }}
- name: MDOPS_JOB_TTL_SECONDS
  value: {{ .Values.controller.jobTtlSeconds | quote }}
- name: MDOPS_JOB_START_FAILURE_SECONDS
  value: {{ .Values.controller.jobStartFailureSeconds | quote }}
- name: MDOPS_JOB_SERVICE_ACCOUNT
  value: {{ .Values.controller.jobServiceAccount | quote }}
{{- with .Values.controller.jobScriptSecret }}
- name: MDOPS_JOB_SCRIPT_SECRET
  value: {{ . | quote }}
{{- end }}
{{- if not .Values.controller.jobStartClaim }}
- name: MDOPS_JOB_START_CLAIM
  value: "false"
{{- end }}
{{- with .Values.controller.jobPodAnnotations }}
- name: MDOPS_JOB_POD_ANNOTATIONS
  value: {{ toJson . | quote }}
{{- end }}
{{- end }}
{{- if .Values.peering.enabled }}
- name: MDOPS_PEERING
  value: {{ .Values.peering.name | quote }}
- name: MDOPS_PEERING_LIFETIME
  value: {{ .Values.peering.lifetime | quote }}
{{- end }}
{{- end }}
{{- define "mdops.apiEnv" -}}
{{- include "mdops.commonEnv" . }}
- name: MDOPS_API_HOST
  value: 0.0.0.0
- name: MDOPS_API_PORT
  value: {{ .Values.api.port | quote }}
- name: MDOPS_PROMETHEUS_URL
  {{- with .Values.api.prometheusUrlSecret }}
  {{- if .name }}
  valueFrom:
    secretKeyRef:
      name: {{ .name }}
      key: {{ .key }}
  {{- else }}
  value: {{ $.Values.api.prometheusUrl | quote }}
  {{- end }}
  {{- end }}
- name: MDOPS_API_EXECUTE_WAIT_SECONDS
  value: {{ .Values.api.executeWaitSeconds | quote }}
- name: MDOPS_API_LOG_LEVEL
  value: {{ .Values.api.logLevel | quote }}
- name: OPS_API_TOKEN
  valueFrom:
    secretKeyRef:
      name: {{ include "mdops.apiSecretName" . }}
      key: {{ if .Values.api.existingSecret }}{{ .Values.api.existingSecretKey }}{{ else }}token{{ end }}
{{- if .Values.api.tokensSecret }}
- name: MDOPS_API_TOKENS_FILE
  value: /etc/mdops/api/tokens.yaml
{{- end }}
{{- end }}
